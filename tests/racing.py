"""Threads run at once, switched as often as the interpreter can: widens every race a test looks for."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any


def race(work: Callable[..., Any], args: Iterable[tuple[Any, ...]]) -> None:
    """``work(*a)`` for each ``a`` in ``args``, each in its own thread, all at once; back once all ended."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=a) for a in args]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
