"""Streams nobody finished, freed by the garbage collector wherever it runs: all charged, no hang.

Each run is a worker process (``tests/guard/dropworker.py``) killed after 180 s if it hangs (which fails
the test); the streams come from the real OpenAI client on a mock transport, are read one chunk, put in
a reference cycle and dropped. The counts are the journal's ``committed`` entries flagged
``interrupted``, one per stream. (``tests/guard/test_dropped_streams.py`` runs the same worker with a
collection forced inside a store operation, and with async streams dropped as ``asyncio.run`` ends.)
"""

from __future__ import annotations

from tests.guard.dropworker import kind_of, run_worker

from . import figures

STORES = ["memory", "sqlite", "redis", "postgres"]
SECTION = "abandoned_streams"


def test_streams_abandoned_under_gc_pressure(store_url: str) -> None:
    n = figures.scale(300, 3000)
    counts = run_worker("pressure", store_url, n)
    kind = kind_of(store_url)
    figures.record(SECTION, f"streams abandoned in reference cycles, GC thresholds (50, 5, 5) ({kind})", n)
    figures.record(SECTION, f"...charged ({kind})", counts["charged"])
    figures.record(SECTION, f"...never charged ({kind})", n - counts["charged"])
    figures.record(SECTION, f"nano-USD still held afterwards ({kind})", counts["held"])
    figures.record(SECTION, f"processes hung ({kind})", 0)  # run_worker failed the test otherwise
    assert counts["charged"] == counts["committed_events"] == n
    assert counts["held"] == 0
    assert counts["spend_lost"] == 0
