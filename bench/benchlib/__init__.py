"""Shared helpers of the benchmark scripts in ``bench/`` (not part of the package).

- ``proc``: CPU seconds and RSS of a process tree from ``/proc``; a peak-RSS watcher.
- ``servers``: subprocess servers on loopback ports 18500-18599 (``BENCH_PORTS``),
  pixelgate's environment and config, the fake upstream, the bare apps, LiteLLM.
- ``load``: aiohttp load (closed loop, burst) and ``wrk`` for the closed loop.
- ``report``: percentiles, tables, JSON results.

The scripts run as ``.venv/bin/python bench/<script>.py``, so ``bench/`` is on
``sys.path`` and ``import benchlib`` works without installing anything.
"""
