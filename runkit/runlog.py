"""The run log: one JSON line per result (a `Record`) in `<output_dir>/pulse_log.jsonl`.

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
from dataclasses import MISSING, asdict, dataclass, field, fields


try:
    import fcntl
except ImportError:  # Windows: no POSIX locks, and no multi-process runs either
    fcntl = None

LOG_NAME = "pulse_log.jsonl"


# Logs before the generator's own default existed wrote run.py's default -bad_noise_layers as "17",
# which then stood for that default too: read it as today's None, so -resume reuses those results.
LEGACY_DEFAULTS = {"bad_noise_layers": ("17", None)}
# Settings added since, with the value that the results of older logs (which lack them) were made with.
ADDED_SETTINGS = {"tries": 1, "stop_at_eps": False, "patience": 0, "max_steps": 0}


@dataclass(kw_only=True)
class Outcome:
    """How the search for one result went, as the log keeps it. What the API returns (PULSE.Result)
    is an Outcome with its name and tensors; a line of the log (Record), the same Outcome with the
    run's own fields (README, "The run log", says the same to users)."""
    input: str          # the input file (or the image's label in an API call)
    seed: int           # the seed of the kept search (-seed with -tries 1 alone gives the same image)
    steps: int          # steps done by the kept search (fewer than -steps when interrupted or stopped at eps)
    best_step: int      # 1-based step of the best image (lowest TOTAL, first on ties)
    losses: dict        # every loss at the best step: the terms of -loss_str, L2 always, and TOTAL
    converged: bool     # whether L2 reached -eps (only when the loss optimises L2, as in 2020)
    interrupted: bool   # whether a stop ended the search, or its tries, early
    seconds: float      # the wall time of all its tries (each beside the other searches of its batch)
    trajectory: list    # one {step, every loss} dict per step of the kept search
    tries: list = field(default_factory=list)  # one {seed, L2, converged, steps, ended} per try (L2: of its best image)
    stopped_at: int | None = None  # with -stop_at_eps: the step whose L2 reached eps, where the search ended
    ended: str | None = None  # why the kept search ended: converged, stalled, ceiling, steps or interrupted
    threads: int        # the CPU threads of the kept search (at its end)
    thread_rule: str = ""  # how the threads were chosen and how idle ones wait (none in logs before it)

    @property
    def status(self):
        """'converged' or 'NOT CONVERGED', with ', interrupted after N steps' when a stop cut it short."""
        return (("converged" if self.converged else "NOT CONVERGED")
                + (f", interrupted after {self.steps} steps" if self.interrupted else ""))

    @property
    def eps_step(self):
        """The first step whose L2 reached eps, for a search that converged: L2 is clamped below at eps, so
        those steps hold the lowest L2 of the trajectory. None for one that did not."""
        if not self.converged:
            return None
        lowest = min(step["L2"] for step in self.trajectory)
        return next(step["step"] for step in self.trajectory if step["L2"] == lowest)

    @property
    def note(self):
        """What a result's line adds: the step that reached eps, and, for a converged search whose image
        (the lowest TOTAL) is not one of those steps', that its L2 is above eps; with -tries, which of
        several tries was kept, with the best L2 of each and how it ended; and why a lone search ended
        when the adaptive budget ended it."""
        note = f" | reached eps at step {self.stopped_at}" if self.stopped_at else ""
        eps_step = self.eps_step
        if eps_step and not self.stopped_at and self.losses["L2"] > self.trajectory[eps_step - 1]["L2"]:
            note += (f" | L2 reached eps at step {eps_step}; the image kept is the lowest TOTAL (step "
                     f"{self.best_step}), whose L2 is above eps")
        if len(self.tries) > 1:
            kept = next(i for i, t in enumerate(self.tries, start=1) if t["seed"] == self.seed)
            l2 = ", ".join(f"{t['L2']:.4g}{how_it_ended(t)}" for t in self.tries)
            note += f" | try {kept} of {len(self.tries)} kept (seed {self.seed}); best L2 of each: {l2}"
        elif self.ended in ("stalled", "ceiling"):
            note += f" | {self.ended} after {self.steps} steps"
        return note


def how_it_ended(attempt):
    """' (stalled after 55 steps)' for a try's summary; nothing for one logged before tries said it."""
    return f" ({attempt['ended']} after {attempt['steps']} steps)" if attempt.get("ended") else ""


@dataclass(kw_only=True)
class Record(Outcome):
    """One line of the log: a result's Outcome, and the run's own fields."""
    output: str         # the result image written for it
    base_seed: int      # the -seed of the run (duplicate k: base_seed + k - 1; its try t: + (t - 1) * duplicates)
    device: str         # where it ran
    args: dict          # every setting of the run: run.py's flags by name

    @classmethod
    def of(cls, result, output, device, base_seed, args):
        """The line of `result` (a PULSE.Result: its Outcome, seconds rounded to ms), written to
        `output` by a run on `device` whose first duplicate's seed is `base_seed`, with settings `args`."""
        outcome = {f.name: getattr(result, f.name) for f in fields(Outcome)}
        return cls(**{**outcome, "seconds": round(result.seconds, 3)}, output=str(output), base_seed=base_seed,
                   device=str(device), args=args)

    def to_json(self):
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, data):
        """A record from a parsed log line; TypeError or KeyError if it is not one."""
        record = cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data or not has_default(f)})
        for name, (legacy, today) in LEGACY_DEFAULTS.items():
            if record.args.get(name) == legacy:
                record.args = {**record.args, name: today}
        return record

    @property
    def first_seed(self):
        """The seed of its first try: what its input and duplicate decide (`seed` is the kept try's)."""
        return self.tries[0]["seed"] if self.tries else self.seed

    def is_complete(self, settings):
        """Whether this is a finished search made with these result settings (a subset of its args)."""
        return not self.interrupted and {k: self.args.get(k, ADDED_SETTINGS.get(k)) for k in settings} == settings


def has_default(field_):
    return field_.default is not MISSING or field_.default_factory is not MISSING


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
    line = record.to_json().encode("utf-8") + b"\n"
    fd = os.open(log_path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with _locked(fd):
            if _ends_mid_line(fd):
                line = b"\n" + line
            _write_all(fd, line)
            os.fsync(fd)
    finally:
        os.close(fd)


def read(log_path, problems=None):
    """All Records of a log. A line that is not one (say, cut off by a killed process) is skipped:
    its problem is added to `problems` when a list is given, else printed as a warning."""
    if not log_path.exists():
        return []
    records = []
    for number, line in enumerate(log_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(Record.from_json(json.loads(line)))
        except json.JSONDecodeError:
            note(problems, f"{log_path}:{number} is not a JSON line")
        except (TypeError, KeyError, AttributeError) as e:
            note(problems, f"{log_path}:{number} is not a run-log record ({type(e).__name__}: {e})")
    return records


def note(problems, problem):
    if problems is None:
        print(f"warning: {problem}, ignored", file=sys.stderr)
    else:
        problems.append(problem)


def latest_by_output(records):
    """{output path: its last record}: a rerun overwrites the image, so the last record describes it."""
    return {record.output: record for record in records}
