"""CPU threads on a shared machine: fewer intra-op threads while other processes are busy.

Why: torch's OpenMP workers spin-wait at every parallel region's barrier. When another busy
process shares the cores, a worker waits on a peer the kernel has descheduled, and a training
step that took 0.2 s took 30x longer (measured on 2 cores with a second two-thread process).
With one thread there is no barrier to wait at, and sharing the machine costs what it should:
a proportional slowdown.

``ThreadGovernor`` reads how much CPU *other* processes used since its last look (``/proc/stat``
minus this process's own time) every ``interval`` seconds of training and sets torch's thread
count to the cores they leave free (at least 1, at most what the run started with). It says
what it detected and did each time it changes the count. Off /proc (not Linux) it does
nothing. ``thread_advice`` is the same measurement once at start-up, as a line for the log.
"""

from __future__ import annotations

import os
import time

import torch

# Another process counts as busy on a core from this much of one core's time (hysteresis
# on the way back, so that a flickering neighbour does not flip the count each interval).
BUSY_CORE = 0.5
FREE_CORE = 0.25


def _cpu_times() -> tuple[float, float] | None:
    """(seconds of non-idle CPU time on the whole machine, seconds used by this process)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = (sum(values[:8]) - idle) / ticks  # guest time is already in user
    own = os.times()
    return busy, own.user + own.system


def cores_used_by_others(before, after, seconds: float) -> float:
    """Average cores other processes kept busy between two ``_cpu_times`` samples."""
    if before is None or after is None or seconds <= 0:
        return 0.0
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / seconds)


def threads_for(cores: int, requested: int, others: float, current: int) -> int:
    """Threads to use on ``cores`` cores when other processes keep ``others`` cores busy."""
    if others >= BUSY_CORE:
        return max(1, min(requested, cores - int(round(others))))
    if others < FREE_CORE:
        return requested
    return current


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class ThreadGovernor:
    """Adjusts torch's thread count to the cores other processes leave free (see module)."""

    def __init__(self, log=print, interval: float = 10.0):
        self.log, self.interval = log, interval
        self.cores = _available_cores()
        self.requested = torch.get_num_threads()
        self.enabled = self.cores > 1 and self.requested > 1 and _cpu_times() is not None
        self._last = (_cpu_times(), time.monotonic())

    def poll(self) -> None:
        """Call once a step; measures and acts at most every ``interval`` seconds."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last[1] < self.interval:
            return
        sample = _cpu_times()
        others = cores_used_by_others(self._last[0], sample, now - self._last[1])
        self._last = (sample, now)
        current = torch.get_num_threads()
        threads = threads_for(self.cores, self.requested, others, current)
        if threads != current:
            torch.set_num_threads(threads)
            self.log(
                f"hmr-fast train: other processes are using {others:.1f} of {self.cores} cores: "
                f"{threads} thread(s) now (was {current}), so that sharing slows training "
                "in proportion instead of stalling OpenMP's waiting threads"
            )


def thread_advice(sample_seconds: float = 0.3) -> str | None:
    """A start-up line when other processes are busy on this machine's cores, else None."""
    cores = _available_cores()
    before, t0 = _cpu_times(), time.monotonic()
    time.sleep(sample_seconds)
    others = cores_used_by_others(before, _cpu_times(), time.monotonic() - t0)
    if others < BUSY_CORE:
        return None
    return (
        f"other processes are using {others:.1f} of {cores} cores; training will use fewer "
        "threads while they run (checked every 10 s). For the full speed, and for timings "
        "that mean something, train on a quiet machine."
    )
