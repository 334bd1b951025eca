from __future__ import annotations

from collections.abc import Iterator

import pytest

import budgetguard


@pytest.fixture
def global_prices() -> Iterator[budgetguard.PriceBook]:
    """The process-wide price book, restored afterwards (overrides and default) so tests stay independent."""
    book = budgetguard.price_book
    overrides = dict(book._overrides)
    default = book._default
    yield book
    with book._lock:
        book._overrides.clear()
        book._overrides.update(overrides)
        book._default = default
        book._cache.clear()
