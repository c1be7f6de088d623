"""The cyclic garbage collector, tuned for a long-running server process.

Measured on ``pixelgate serve`` under load (perf, the native route at 64 connections):
CPython's defaults (a young collection every 700 net allocations, an older one every
10 of those) spent **14 % of the process's CPU** in the collector. A request allocates a
few thousand container objects, so the young generation was collected several times per
request, and each collection that ran while hundreds of jobs were in flight promoted
their live objects, making the older collections walk the whole heap of start-up
objects (modules, the app, SQLAlchemy's and pydantic's caches) again and again.

:func:`tune_for_server` moves what start-up made into the permanent generation
(``gc.freeze()``: never scanned again) and collects young objects every
:data:`YOUNG_THRESHOLD` allocations: 2 to 3 % of the CPU at the same load. Reference
counting still frees everything that is not in a cycle at once; only cyclic garbage
waits a little longer. Long-running commands call it once they are up (``serve``,
``worker``); tests and the Python API keep the interpreter's defaults.
"""

from __future__ import annotations

import gc

__all__ = ["OLDER_THRESHOLD", "YOUNG_THRESHOLD", "tune_for_server"]

#: net allocations of container objects between two young collections (CPython: 700)
YOUNG_THRESHOLD = 10_000
#: young collections per middle one, and middle per old one (CPython: 10 and 10)
OLDER_THRESHOLD = 20


def tune_for_server() -> None:
    """Freeze start-up's objects out of the collector's reach and collect less often."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
