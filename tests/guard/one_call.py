"""For tests that check what one call was charged: the single committed entry a guard journaled, and
amounts priced by hand (tokens x USD per million)."""

from __future__ import annotations

import math
from decimal import Decimal

from budgetguard import Guard, JournalEntry


def nano(*pairs: tuple[int, str]) -> int:
    """Tokens x USD-per-million, summed, in nano-USD rounded up once."""
    return math.ceil(sum(Decimal(tokens) * Decimal(rate) * 1000 for tokens, rate in pairs))


def committed(guard: Guard) -> JournalEntry:
    """The one committed entry of the guard's journal."""
    (entry,) = guard.ledger.history(events=["committed"])
    return entry
