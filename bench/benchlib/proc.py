"""CPU time and memory of a process tree, read from ``/proc`` (Linux only)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str]:
    """Fields of ``/proc/<pid>/stat`` after the command name (field 3 is index 0)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's ``children`` file)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive now."""
    seen: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        if p in seen or not Path(f"/proc/{p}").exists():
            continue
        seen.append(p)
        todo += children(p)
    return seen


def tree_cpu_s(pid: int) -> float:
    """utime+stime of ``pid`` and its live descendants, plus the CPU of reaped children
    (cutime+cstime), in seconds. Ticks are 1/``CLK_TCK`` s: take differences over runs of
    at least a few seconds."""
    ticks = 0
    for p in tree_pids(pid):
        try:
            f = stat_fields(p)
        except (OSError, IndexError):
            continue
        ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return ticks / CLK_TCK


def cpu_s(pid: int) -> float:
    """CPU seconds of a process, all its threads, to the nanosecond.

    ``/proc/<pid>/task/*/schedstat`` (time on CPU in ns) is exact, where the
    ``utime``/``stime`` ticks of ``/proc/<pid>/stat`` are sampled at 100 Hz (a bare
    server can do 200 requests within one tick). Exited threads are no longer listed,
    so a phase in which a thread exits under-counts it (the servers here keep theirs).
    """
    total_ns = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as fh:
                    total_ns += int(fh.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    except OSError:
        pass
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks_s = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total_ns / 1e9 if total_ns else ticks_s


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``, ``Threads``), 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (sum of ``VmRSS``)."""
    return sum(status_kb(p, "VmRSS") for p in tree_pids(pid))


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as fh:
        parts = [int(v) for v in fh.readline().split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    return float(sum(parts[:8]) - idle), float(sum(parts[:8]))


class PeakRss:
    """Samples the RSS of process trees every ``interval`` s in a thread (so a busy event
    loop in the load client does not delay it). ``with PeakRss([pid]) as rss: ...`` then
    ``rss.peak_mb``; ``start_mb`` is the first sample."""

    def __init__(self, pids: list[int], interval: float = 0.05) -> None:
        self.pids = pids
        self.interval = interval
        self.start_mb = 0.0
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample_mb(self) -> float:
        return sum(tree_rss_kb(p) for p in self.pids) / 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self.sample_mb())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self.start_mb = self.peak_mb = self.sample_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.sample_mb())


class CpuMeter:
    """Server CPU over a block: ``with CpuMeter(pid) as cpu: ...`` then ``cpu.seconds``,
    ``cpu.wall_s``, ``cpu.per_request_ms(n)`` and the machine's other load,
    ``cpu.other_cores`` (on a shared machine: how noisy the figure is)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seconds = 0.0
        self.wall_s = 0.0
        self.machine_busy_cores = 0.0

    def __enter__(self) -> CpuMeter:
        self._m0 = machine_cpu()
        self._c0, self._t0 = tree_cpu_s(self.pid), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = tree_cpu_s(self.pid) - self._c0
        self.wall_s = time.monotonic() - self._t0
        (b0, t0), (b1, t1) = self._m0, machine_cpu()
        self.machine_busy_cores = (b1 - b0) / (t1 - t0) * (os.cpu_count() or 1) if t1 > t0 else 0

    @property
    def other_cores(self) -> float:
        """Cores busy with anything but the server (the load client included)."""
        server = self.seconds / self.wall_s if self.wall_s else 0.0
        return max(0.0, self.machine_busy_cores - server)

    def per_request_ms(self, requests: int) -> float:
        return self.seconds * 1000 / requests if requests else float("nan")


class CpuTimeline:
    """The cores a process keeps busy over time: ``with CpuTimeline(pid) as tl: ...``
    then ``tl.cores``, its CPU seconds per wall second in each ``step`` s from the start
    (all its threads, from ``schedstat``; sampled in a thread of this process)."""

    def __init__(self, pid: int, step: float = 0.25) -> None:
        self.pid = pid
        self.step = step
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        try:
            self.samples.append((time.monotonic(), cpu_s(self.pid)))
        except OSError:  # the process is gone
            self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.step):
            self._sample()

    def __enter__(self) -> CpuTimeline:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def cores(self) -> list[float]:
        pairs = zip(self.samples, self.samples[1:], strict=False)
        return [round((c1 - c0) / (t1 - t0), 2) for (t0, c0), (t1, c1) in pairs if t1 > t0]
