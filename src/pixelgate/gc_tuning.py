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

Start-up itself allocates millions of container objects that live for good (modules,
classes, schemas): with CPython's defaults a ``serve`` start ran ~340 young collections,
0.14-0.18 s of CPU. :func:`quiet_start_up`, the first thing the ``pixelgate`` program
does, collects every :data:`START_YOUNG_THRESHOLD` allocations until the server is up.
A ``serve`` start makes ~210,000 net allocations of such objects before the freeze, so
at 1,000,000 it runs no collection at all: at 50,000 it ran ~5 (0.05-0.08 s of CPU, 5-7 %
of a start) that found ~1,300 objects of garbage, which stay frozen instead (+0.7 MB of
idle RSS; a full collection before the freeze would cost 0.08-0.11 s). A start that runs
long (a database waited for, a big migration) still collects, every million allocations.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

__all__ = [
    "OLDER_THRESHOLD",
    "START_YOUNG_THRESHOLD",
    "WORKER_MIDDLE_THRESHOLD",
    "YOUNG_THRESHOLD",
    "end_quiet_start_up",
    "quiet_start_up",
    "tune_for_server",
]

#: net allocations of container objects between two young collections (CPython: 700)
YOUNG_THRESHOLD = 10_000
#: young collections per middle one, and middle per old one (CPython: 10 and 10)
OLDER_THRESHOLD = 20
#: young collections per middle one in ``worker``. Its in-flight jobs (5,000 in the
#: scale-out benchmark, each alive for the provider's seconds) survive the young
#: collections, so every middle one walks them all again: 130-150 ms of CPU each, three in
#: a 5,000-job run, 40 % of the worker's collector time (gc callbacks, 0.54 s in all).
#: Collected five times less often, the middle generation costs a fifth of that; cyclic
#: garbage that reaches it waits longer (the young collections stay as they are)
WORKER_MIDDLE_THRESHOLD = 100
#: net allocations between two young collections while the program starts (a start
#: makes ~210,000: none runs)
START_YOUNG_THRESHOLD = 1_000_000
#: CPython's own thresholds, given back to commands that do not serve
DEFAULT_THRESHOLDS = (700, 10, 10)


def quiet_start_up() -> None:
    """Collect rarely until start-up is over, when this process is the ``pixelgate``
    program (an application or a test importing the CLI keeps its thresholds)."""
    if _is_pixelgate_program():
        gc.set_threshold(START_YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)


def end_quiet_start_up() -> None:
    """CPython's defaults again, for a command that does not serve (``serve`` and
    ``worker`` call :func:`tune_for_server` instead)."""
    if gc.get_threshold()[0] == START_YOUNG_THRESHOLD:
        gc.set_threshold(*DEFAULT_THRESHOLDS)


def _is_pixelgate_program() -> bool:
    """The console script ``pixelgate``, or ``python -m pixelgate``."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if program is None:
        return False
    return program.stem == "pixelgate" or program.parts[-2:] == ("pixelgate", "__main__.py")


def tune_for_server(*, middle: int = OLDER_THRESHOLD) -> None:
    """Freeze start-up's objects out of the collector's reach and collect less often
    (``middle``: young collections per middle one; the worker's is
    :data:`WORKER_MIDDLE_THRESHOLD`)."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, middle, OLDER_THRESHOLD)
