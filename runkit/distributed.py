"""One folder of faces over many processes: a torchrun launch, its process group, each rank's share.

torchrun (also under Slurm's `srun`) starts one process per GPU and tells each its RANK (0 ..
WORLD_SIZE-1 over the job) and LOCAL_RANK (its index on its machine). A process started without
them, or alone in its job, is a single run: no process group, and a Team of one does what a
single process always did.
"""
import os
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from errors import PulseError

POLL_SECONDS = 0.5
# The collectives wait for rank 0's setup: a weights download and conversion, a gaussian fit.
COLLECTIVE_TIMEOUT = timedelta(hours=2)


class TeamError(PulseError, RuntimeError):
    """A torchrun job that is not set up as one, or whose processes disagree."""


@dataclass(frozen=True)
class Launch:
    """Where this process stands in its job."""
    rank: int = 0
    local_rank: int | None = None  # None: not started by a launcher, so no GPU is implied
    world_size: int = 1

    def tag(self, message):
        """`message` prefixed with this process's rank in a multi-process job."""
        return f"rank {self.rank}: {message}" if self.world_size > 1 else message


def _environment_int(environ, name, lowest):
    text = environ[name]
    try:
        value = int(text)
    except ValueError:
        value = lowest - 1
    if value < lowest:
        raise TeamError(f"{name}={text!r} is not a whole number of at least {lowest}; start jobs with torchrun")
    return value


def launch_from_environment(environ=os.environ):
    """The Launch described by torchrun's RANK, LOCAL_RANK and WORLD_SIZE, or a single process."""
    if "WORLD_SIZE" not in environ:
        return Launch()
    missing = [name for name in ("RANK", "LOCAL_RANK") if name not in environ]
    if missing:
        raise TeamError(f"WORLD_SIZE is set but {' and '.join(missing)} not; start jobs with torchrun")
    launch = Launch(_environment_int(environ, "RANK", 0), _environment_int(environ, "LOCAL_RANK", 0),
                    _environment_int(environ, "WORLD_SIZE", 1))
    if launch.rank >= launch.world_size:
        raise TeamError(f"RANK={launch.rank} is not below WORLD_SIZE={launch.world_size}")
    return launch


class Team:
    """The processes of one job, from any one of them: a context manager that joins the process
    group of a multi-process launch (nccl on CUDA, gloo elsewhere) and leaves it on exit."""

    def __init__(self, launch, device):
        self.launch, self.rank, self.size = launch, launch.rank, launch.world_size
        self.device = device
        self.store = None
        self.counted = {}  # what this process has done: {"results": n, "searches": n}

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def is_multi(self):
        return self.size > 1

    def __enter__(self):
        if self.is_multi:
            on_cuda = self.device.type == "cuda"
            if on_cuda:
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if on_cuda else "gloo", rank=self.rank, world_size=self.size,
                                    timeout=COLLECTIVE_TIMEOUT, device_id=self.device if on_cuda else None)
            # Progress counters go through the launcher's key-value store (torchrun's, or the one
            # rank 0 started in init_process_group): no collective, so no rank ever waits for them.
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False)
            self.store = dist.PrefixStore(f"pulse/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/", store)
        return self

    def __exit__(self, *exc):
        if dist.is_initialized():
            dist.destroy_process_group()
        return False

    def tag(self, message):
        return self.launch.tag(message)

    # ---- agreeing ----------------------------------------------------------------------------

    def from_main(self, values):
        """Rank 0's list of ints on every rank (a drawn seed, the searches still to do).

        Every rank passes its own list, which must be as long as rank 0's."""
        if not self.is_multi:
            return list(values)
        on = self.device if self.device.type == "cuda" else torch.device("cpu")
        length = torch.tensor([len(values)], dtype=torch.int64, device=on)
        dist.broadcast(length, src=0)
        if int(length) != len(values):
            raise TeamError(f"rank 0 sees {int(length)} searches and this rank {len(values)}: "
                            f"every rank must see the same input folder")
        shared = torch.tensor(list(values), dtype=torch.int64, device=on)
        dist.broadcast(shared, src=0)
        return shared.tolist()

    def main_first(self, setup):
        """Run `setup` (a weights download or conversion, a gaussian fit) on rank 0 while the
        others wait; then on the others, which find its files in place. Single runs just run it."""
        if not self.is_multi:
            return setup()
        if self.is_main:
            try:
                result = setup()
            except BaseException:
                self.from_main([1])
                raise
            self.from_main([0])
            return result
        (failed,) = self.from_main([0])
        if failed:
            raise TeamError("setup failed on rank 0 (see its message)")
        return setup()

    def share(self, items):
        """This rank's consecutive slice of `items`; the slices of all ranks cover it exactly once."""
        count = len(items)
        return items[self.rank * count // self.size:(self.rank + 1) * count // self.size]

    # ---- progress ----------------------------------------------------------------------------

    def count(self, what, amount):
        """Add `amount` to this rank's count of `what` (run.py counts "results" and "searches")."""
        self.counted[what] = self.counted.get(what, 0) + amount
        if self.store is not None:
            self.store.add(f"{what}/{self.rank}", amount)

    def counts(self, what):
        """Each rank's count of `what` so far."""
        if self.store is None:
            return [self.counted.get(what, 0)]
        return [self.store.add(f"{what}/{rank}", 0) for rank in range(self.size)]

    def finish(self, while_waiting=None):
        """Wait until every rank has finished its share, so that the launcher stops no rank early
        when one ends with an error; calls `while_waiting()` about twice a second meanwhile."""
        if self.store is None:
            return
        self.store.add("finished", 1)
        while self.store.add("finished", 0) < self.size:
            if while_waiting:
                while_waiting()
            time.sleep(POLL_SECONDS)
        if while_waiting:
            while_waiting()
