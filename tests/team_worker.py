"""Run under torchrun by tests/test_distributed.py to make one rank misbehave.

    torchrun ... tests/team_worker.py oom_on_rank_1 <run.py flags>: run.py, with every search of
        rank 1 running out of memory
    torchrun ... tests/team_worker.py main_first <file>: each rank's setup appends its start and
        end to <file>
"""
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run  # noqa: E402
import search  # noqa: E402
from runkit.distributed import Team, launch_from_environment  # noqa: E402


def oom_on_rank_1(argv):
    if os.environ["RANK"] == "1":
        def no_memory(*args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        search.BatchSearch.step = no_memory
    return run.main(argv)


def main_first(argv):
    record = Path(argv[0])
    launch = launch_from_environment()

    def setup():
        with open(record, "a") as f:
            f.write(f"start {launch.rank}\n")
        time.sleep(1.0)
        with open(record, "a") as f:
            f.write(f"end {launch.rank}\n")
        return launch.rank

    with Team(launch, torch.device("cpu")) as team:
        return 0 if team.main_first(setup) == launch.rank else 3


if __name__ == "__main__":
    mode = {"oom_on_rank_1": oom_on_rank_1, "main_first": main_first}[sys.argv[1]]
    sys.exit(mode(sys.argv[2:]))
