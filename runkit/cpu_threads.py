"""torch's CPU threads: by default one per physical core that no other process keeps busy,
looked at again as each search starts.

Why: torch splits an operation evenly among its threads and waits for the last one to finish.
When another process holds a core, the thread that shares that core runs only in the time slices
the scheduler gives it, so every operation waits for it, thousands of times a step, while the
other threads spin. Beside a process spinning on one of two cores, the README's first command
searched for 60.6 s with 2 threads and 6.8 s with 1 (docs/speed.md, "A busy machine").

The default follows the free cores: as a search starts, the busy time of the other processes on
the cores this process may use over the last quarter to half second is read from /proc/stat (all
busy time less this process's own, its ended children's, and niced processes' where they yield
to it), and the threads are set to the physical cores less the ones they take. A search keeps its
count to its end (with -batch_size above 1, until another row starts or ends), because sums split
among threads round differently, in float32 and float64: the run log records each result's count,
and `-threads N` gives the same bits again. Fixed instead by `-threads N`, `set_threads(N)` or
OMP_NUM_THREADS; elsewhere than Linux (no /proc/stat) the default is the physical cores, as torch's.
"""
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

CHECK_SECONDS = 0.25  # the shortest look at the others' load (25 ticks of /proc/stat a core), and
                      # how often the clocks are read
TAKEN_LOAD = 0.5     # the others' load that takes a core: a process busy half the time or more
PROC_STAT = Path("/proc/stat")
AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")


def physical_cores():
    """Physical cores this process may run on (extra hyper-threads do not speed up convolutions)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    try:
        cores = {tuple(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/{name}").read_text().strip()
                       for name in ("physical_package_id", "core_id")) for cpu in allowed}
    except OSError:  # not Linux, or no topology in sysfs
        return len(allowed)
    return len(cores)


@cache
def niced_processes_yield():
    """Whether a niced process gives its core to ours at once: where ours is not niced itself and
    the kernel does not group processes by session (autogroup, on in many desktop kernels, weighs
    sessions against each other, so that a niced process in another terminal takes its share)."""
    try:
        autogroup = AUTOGROUP.read_text().strip() == "1"
    except OSError:
        autogroup = False
    return os.nice(0) == 0 and not autogroup


@dataclass(frozen=True)
class CpuTimes:
    """A reading of the clocks: wall seconds, the busy seconds of the CPUs this process may use, and
    the CPU seconds of this process (all its threads) and of its children that have ended."""
    wall: float
    busy: float
    own: float

    @classmethod
    def now(cls):
        """The clocks now, or None where the CPUs' busy time cannot be read (not Linux)."""
        try:
            lines = PROC_STAT.read_text().splitlines()
        except OSError:
            return None
        allowed = {f"cpu{cpu}" for cpu in os.sched_getaffinity(0)}
        # Columns: user nice system idle iowait irq softirq steal. Idle and iowait leave a CPU to us,
        # and so does the time of niced processes (nice) where they yield to ours.
        free = {1, 3, 4} if niced_processes_yield() else {3, 4}
        ticks = sum(sum(int(v) for i, v in enumerate(line.split()[1:9]) if i not in free)
                    for line in lines if line.split(maxsplit=1)[0] in allowed)
        own = os.times()
        return cls(time.monotonic(), ticks / os.sysconf("SC_CLK_TCK"),
                   own.user + own.system + own.children_user + own.children_system)

    def others_load(self, since):
        """The cores other processes kept busy on average from `since` to this reading."""
        return max(0.0, ((self.busy - since.busy) - (self.own - since.own)) / (self.wall - since.wall))


class FreeCores:
    """The thread count that follows the cores other processes leave free in the last moments: the
    clocks are read every CHECK_SECONDS (`note`, by a daemon thread) and a look compares now with the
    newest reading at least that old."""

    def __init__(self, cores):
        self.cores = cores
        self.readings = deque([CpuTimes.now()], maxlen=3)

    def note(self):
        """Keep a reading of the clocks now, unless the last one kept is younger than CHECK_SECONDS."""
        now = CpuTimes.now()
        if now is not None and self.readings[-1] is not None and now.wall - self.readings[-1].wall >= CHECK_SECONDS:
            self.readings.append(now)

    def threads_now(self):
        """The threads for the others' load since the newest reading CHECK_SECONDS old (the first
        look of a process waits for it); None where the clocks cannot be read."""
        now = CpuTimes.now()
        if now is None or self.readings[0] is None:
            return None
        old_enough = [r for r in self.readings if now.wall - r.wall >= CHECK_SECONDS]
        if not old_enough:
            time.sleep(CHECK_SECONDS - (now.wall - self.readings[0].wall))
            return self.threads_now()
        taken = int(now.others_load(old_enough[-1]) + 1 - TAKEN_LOAD)
        return max(1, self.cores - taken)


_free_cores = None  # the FreeCores the threads follow; None when fixed (or not yet set)
_rule = None        # how the process's thread count was chosen; None until set
_sampler = None     # the daemon thread that reads the clocks, once started


def sample_forever():
    """The daemon thread's work: note the clocks for whichever FreeCores the threads follow now."""
    while True:
        time.sleep(CHECK_SECONDS)
        if _free_cores is not None:
            _free_cores.note()


def set_threads(requested=None):
    """Choose torch's CPU threads for this process: `requested` fixes them; None fixes them at
    OMP_NUM_THREADS where that is set, and otherwise follows the free cores. Returns the count now."""
    global _free_cores, _rule, _sampler
    _free_cores = None
    if requested is not None:
        torch.set_num_threads(requested)
        _rule = f"fixed at {requested} (-threads)"
    elif os.environ.get("OMP_NUM_THREADS"):
        _rule = f"fixed at {torch.get_num_threads()} (OMP_NUM_THREADS)"
    else:
        cores = physical_cores()
        torch.set_num_threads(cores)
        _free_cores = FreeCores(cores)
        _rule = f"one per free core of {cores}" if _free_cores.readings[0] else f"one per core ({cores})"
        if _free_cores.readings[0] and _sampler is None:
            _sampler = threading.Thread(target=sample_forever, daemon=True, name="pulse-cpu-load")
            _sampler.start()
    return torch.get_num_threads()


def set_default():
    """The default of set_threads, unless the process has chosen already (the library calls this when
    it builds a model: a notebook gets what the scripts get)."""
    if _rule is None:
        set_threads()


def follow_free_cores():
    """As a search starts: set the thread count to the cores left free in the last moments (nothing
    when the threads are fixed)."""
    threads = _free_cores.threads_now() if _free_cores is not None else None
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)


def rule():
    """For the run log and bench.py: how the thread count was chosen, and how idle threads wait."""
    policy = os.environ.get("OMP_WAIT_POLICY", "").lower()
    waiting = {"passive": "sleep", "active": "spin"}.get(policy, "spin a while, then sleep (OpenMP's default)")
    return f"{_rule or 'torch default'}; idle threads {waiting}"
