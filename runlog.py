"""The run log: one JSON line per result in `<output_dir>/pulse_log.jsonl`.

A record's fields (README, "The run log", says the same to users):
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
"""
import json
import sys

import torch

from files import append_line

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


def append(log_path, record):
    append_line(log_path, json.dumps(record))


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
