"""Fixtures of the real-world tier that fail for a known reason owned by other work (see issue 14).

Each is an explicit strict xfail: when the work lands, the test passes, the xfail fails, and the entry
goes. Keyed by the fixture file's number.
"""

from __future__ import annotations

KNOWN_FAILURES: dict[str, str] = {}
