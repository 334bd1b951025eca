"""A TCP proxy between redis-py and a test Redis server that misbehaves at random, on purpose.

For each chunk a client sends, with probability ``reset`` the proxy closes both sockets instead of
forwarding it (the server never sees the request). For each chunk the server sends back, with
probability ``drop`` the proxy closes the client's socket instead of forwarding it (the server executed
the command, the client never learns the result: a lost reply), and with probability ``delay`` it holds
the chunk for ``delay_s`` seconds first. Counts of each fault are kept for the figures. The plumbing is
the ledger suite's ``LossyProxy``; only what happens to each chunk differs.
"""

from __future__ import annotations

import random
import time
from collections import Counter

from tests.ledger.proxy import LossyProxy, _Pair

__all__ = ["ChaosProxy"]


class ChaosProxy(LossyProxy):
    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        drop: float = 0.0,
        reset: float = 0.0,
        delay: float = 0.0,
        delay_s: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.drop, self.reset, self.delay, self.delay_s = drop, reset, delay, delay_s
        self.faults: Counter[str] = Counter()
        self._rng = random.Random(seed)
        super().__init__(*upstream)

    def calm(self) -> None:
        """Stop injecting faults (to read the final state through the same proxy)."""
        self.drop = self.reset = self.delay = 0.0

    def _roll(self, p: float, fault: str) -> bool:
        with self._lock:
            hit = p > 0 and self._rng.random() < p
            self.faults[fault] += hit
        return hit

    def _on_request(self, pair: _Pair, data: bytes) -> bool:
        return not self._roll(self.reset, "connection resets before the request reached Redis")

    def _on_reply(self, pair: _Pair, data: bytes) -> bool:
        if self._roll(self.drop, "replies dropped after Redis executed the command"):
            return False
        if self._roll(self.delay, "replies delayed"):
            time.sleep(self.delay_s)
        return True
