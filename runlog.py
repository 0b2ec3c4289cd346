"""The run log: one JSON line per result in `<output_dir>/pulse_log.jsonl`.

A record's fields (docs/running.md, "The run log", says the same to users):
  input, output    the input file and the result image written for it
  seed, base_seed  the seed of this search, and the -seed of the run (duplicate k: base_seed + k - 1)
  device, threads  where it ran
  steps            steps done (fewer than -steps when interrupted)
  best_step        1-based step of the best image (lowest TOTAL, first on ties)
  losses           every loss at the best step: the terms of -loss_str, L2 always, and TOTAL
  converged        whether L2 reached -eps (only when the loss optimises L2, as in 2020)
  interrupted      whether a signal stopped the search early
  seconds          the search's wall time (of its whole batch)
  args             every run.py flag
  trajectory       one {step, every loss} dict per step

Many processes may append to one log (a torchrun job, over several machines on a shared
network file system). `O_APPEND` alone does not keep lines whole there: an NFS client computes
the end of the file from its own cached size, so two machines can write at the same offset.
So each append holds a POSIX record lock (`fcntl.lockf`, which NFS passes to the server's lock
manager and on which the Linux client revalidates its cache) around one write, a flush and an
fsync: a line is whole on the server before the next writer may start. A line cut off by a
killed process is ended with a newline by the next writer, so it damages only itself.
"""
import json
import os
import sys
from contextlib import contextmanager

import torch

try:
    import fcntl
except ImportError:  # Windows: no POSIX locks, and no multi-process runs either
    fcntl = None

LOG_NAME = "pulse_log.jsonl"


def make_record(job, result, b, output, device, args):
    """The record of sample `b` of a search `result` for `job`, written to `output`."""
    return {
        "input": str(job.source), "output": str(output), "seed": job.seed, "base_seed": job.base_seed,
        "device": str(device), "steps": result.steps_done, "best_step": result.best_step[b],
        "losses": result.best_losses[b], "converged": result.converged[b],
        "interrupted": result.interrupted, "seconds": round(result.seconds, 3),
        "threads": torch.get_num_threads(), "args": vars(args), "trajectory": result.trajectory[b],
    }


def status(record):
    """'converged' or 'NOT CONVERGED', with ', interrupted after N steps' when a signal cut it short."""
    text = "converged" if record["converged"] else "NOT CONVERGED"
    return text + (f", interrupted after {record['steps']} steps" if record.get("interrupted") else "")


def is_complete(record, settings):
    """Whether a record is a finished search made with these result settings (a subset of its args)."""
    return not record.get("interrupted") and {k: record.get("args", {}).get(k) for k in settings} == settings


@contextmanager
def _locked(fd):
    if fcntl is None:
        yield
        return
    fcntl.lockf(fd, fcntl.LOCK_EX, 0, 0, os.SEEK_SET)  # the whole file, however long it grows
    try:
        yield
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN, 0, 0, os.SEEK_SET)


def _ends_mid_line(fd):
    if os.fstat(fd).st_size == 0:
        return False
    os.lseek(fd, -1, os.SEEK_END)
    return os.read(fd, 1) != b"\n"


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def append(log_path, record):
    line = json.dumps(record).encode("utf-8") + b"\n"
    fd = os.open(log_path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with _locked(fd):
            if _ends_mid_line(fd):
                line = b"\n" + line
            _write_all(fd, line)
            os.fsync(fd)
    finally:
        os.close(fd)


def read(log_path):
    """All records of a log; a damaged line (say, from a killed process) is skipped with a warning."""
    if not log_path.exists():
        return []
    records = []
    for number, line in enumerate(log_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            print(f"warning: {log_path}:{number} is not a JSON line, ignored", file=sys.stderr)
    return records


def latest_by_output(records):
    """{output path: its last record}: a rerun overwrites the image, so the last record describes it."""
    return {record["output"]: record for record in records if record.get("output")}
