"""Run PULSE for every combination of a few run.py flags and compare the results in one table.

    python sweep.py -input_dir input -grid learning_rate=0.2,0.4,0.8 -grid steps=100,200 -- -cache_dir cache

Every combination gets its own run.py output folder under -output_dir, named after its values
(e.g. `learning_rate=0.2,steps=100`), and `<output_dir>/sweep.md` compares them. All run with
the same seed and with run.py -resume, so a second sweep reuses the results that are finished.
"""
if __name__ == "__main__":  # before the slow imports below: a stop while they load is one line too
    from runkit import quiet_stop
    quiet_stop.install()

import argparse
import itertools
import re
import shlex
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import run_options
from runkit import exits, flags, quiet_stop, runlog
from errors import PulseError
from niqe import niqe
from runkit.files import atomic_path
from runkit.images import read_rgb
from settings import JobSettings

SWEEP_OWNED = ("input_dir", "output_dir", "resume")  # the sweep sets these for every combination
SWITCHES = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
TABLE_NAME = "sweep.md"
DEFAULT_SEED = 0


@dataclass
class Combination:
    values: dict            # {run.py flag name: value as given}
    folder: Path            # its run.py -output_dir
    options: run_options.RunOptions  # what run.py runs for it


# ---- command line --------------------------------------------------------------------------

def build_parser():
    parser = flags.parser(
        usage="%(prog)s [-input_dir DIR] -grid NAME=V1,V2,... [-grid ...] [-output_dir DIR] [-seed N] "
              "[-- RUN_FLAGS ...]",
        description="Run run.py for every combination of the -grid values, one output folder each, "
                    f"and compare the results in <output_dir>/{TABLE_NAME}: converged share, mean best "
                    "L2, mean best step, mean seconds and mean NIQE (lower is better).",
        epilog="Flags after -- go to every run.py call, e.g. -- -cache_dir cache -duplicates 4. "
               "On/off flags take true or false in a grid, e.g. -grid tile_latent=true,false. "
               "Finished combinations are reused, not rerun (run.py -resume).")
    parser.add_argument("-input_dir", "--input_dir", default="input", help="the run.py -input_dir of every combination")
    parser.add_argument("-grid", "--grid", action="append", required=True, metavar="NAME=V1,V2,...",
                        help="a run.py flag name and the comma-separated values to try; repeat for more flags")
    parser.add_argument("-output_dir", "--output_dir", type=Path, default=Path("sweeps"),
                        help="one folder per combination goes here, and the table")
    parser.add_argument("-seed", "--seed", type=flags.declared_type(JobSettings, "seed"),
                        help=f"seed of every combination (default {DEFAULT_SEED}); to vary it, use -grid seed=0,1,2")
    return parser


def split_argv(argv):
    """(the sweep's own arguments, the run.py flags after `--`)."""
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def run_flags():
    """{name: argparse action} of the run.py flags a grid may vary."""
    return {name: action for name, action in run_options.build_parser().flags().items()
            if name not in SWEEP_OWNED + ("help",)}


def parse_grid(texts, actions, parser):
    """{flag name: [values]} from NAME=V1,V2 texts; argparse errors for anything else."""
    grid = {}
    for text in texts:
        name, equals, values = text.partition("=")
        name = name.strip().lstrip("-")
        values = [value.strip() for value in values.split(",")]
        if not equals or not all(values):
            parser.error(f"argument -grid: {text!r} should be NAME=V1,V2,..., e.g. learning_rate=0.2,0.4")
        if name not in actions:
            parser.error(f"argument -grid: {name!r} is not a run.py flag that a sweep can vary; "
                         f"valid names: {', '.join(sorted(actions))}")
        if name in run_options.PROCESS_FLAGS:
            parser.error(f"argument -grid: -{name} holds for the whole process, so a sweep cannot vary it; "
                         f"give it after --")
        if name in grid:
            parser.error(f"argument -grid: {name} is given twice; list all its values in one -grid")
        if actions[name].nargs == 0 and not all(value.lower() in SWITCHES for value in values):
            parser.error(f"argument -grid: {name} is an on/off flag; its values must be true or false")
        grid[name] = values
    return grid


def check_run_flags(run_argv, grid, parser):
    """The flags after -- must not fight with the grid or with the sweep's own flags."""
    given = {token.lstrip("-").split("=")[0] for token in run_argv if token.startswith("-")}
    for name in sorted(given & set(grid)):
        parser.error(f"-{name} after -- is also in -grid: give its values in -grid only")
    for name in sorted(given & {"input_dir", "output_dir", "seed"}):
        parser.error(f"-{name} is the sweep's own flag: put it before --")


# ---- combinations --------------------------------------------------------------------------

def folder_name(values):
    """A readable folder name such as `learning_rate=0.2,steps=100`, safe on every file system."""
    return re.sub(r"[^\w.,=+-]", "_", ",".join(f"{name}={value}" for name, value in values.items()))


def flag_value(name, text, actions, parser):
    """A grid value as run.py's parser would take it (its type and choices); a usage error if it would not."""
    action = actions[name]
    if action.nargs == 0:  # an on/off flag is there or not
        return SWITCHES[text.lower()]
    try:
        value = action.type(text) if action.type else text
    except (argparse.ArgumentTypeError, ValueError) as e:
        parser.error(f"argument -grid: {name}={text}: {e}")
    if action.choices is not None and value not in action.choices:
        parser.error(f"argument -grid: {name}={text}: choose from {', '.join(map(str, action.choices))}")
    return value


def plan(args, grid, base, actions, parser):
    """One Combination per choice of grid values: the options after -- with those values set."""
    seed = {} if "seed" in grid else {"seed": DEFAULT_SEED if args.seed is None else args.seed}
    combinations = []
    for chosen in itertools.product(*grid.values()):
        values = dict(zip(grid, chosen))
        folder = args.output_dir / folder_name(values)
        typed = {name: flag_value(name, text, actions, parser) for name, text in values.items()}
        try:
            options = base.with_values({**typed, **seed, "input_dir": Path(args.input_dir), "output_dir": folder,
                                        "resume": True})
        except ValueError as e:  # a value the options refuse (run.py's parser would have)
            parser.error(f"argument -grid: {folder.name}: {e}")
        combinations.append(Combination(values, folder, options))
    if len({c.folder for c in combinations}) < len(combinations):
        parser.error("argument -grid: some combinations share a folder name; are values repeated?")
    return combinations


# ---- the table -----------------------------------------------------------------------------

def niqe_or_none(path):
    """NIQE of an image, or None where it cannot be scored (e.g. smaller than NIQE's 96x96 blocks)."""
    try:
        return niqe(np.asarray(read_rgb(path)))
    except (OSError, ValueError):
        return None


def finished_records(combination):
    """The latest complete record of each result made with this combination's flags and seed."""
    settings = combination.options.result_settings()
    records = [r for r in runlog.read(combination.folder / runlog.LOG_NAME)
               if r.is_complete(settings) and r.base_seed == combination.options.jobs.seed]
    return list(runlog.latest_by_output(records).values())


def mean(values, form):
    values = [v for v in values if v is not None]
    return format(statistics.fmean(values), form) if values else "-"


def table_row(combination, exit_code):
    records = finished_records(combination)
    converged = sum(r.converged for r in records)
    status = ("not run" if exit_code is None else "ok" if exit_code == 0 else
              "interrupted" if exit_code > 128 else f"exit {exit_code}")
    return [*combination.values.values(), str(len(records)), f"{converged}/{len(records)}" if records else "-",
            mean((r.losses["L2"] for r in records), ".4g"),
            mean((r.best_step for r in records), ".1f"),
            mean((r.seconds for r in records), ".1f"),
            mean((niqe_or_none(combination.folder / Path(r.output).name) for r in records), ".3f"),
            status]


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def report(grid, combinations, exit_codes, command):
    header = [*grid, "results", "converged", "mean best L2", "mean best step", "mean seconds", "mean NIQE", "run"]
    rows = [table_row(c, exit_codes.get(c.folder)) for c in combinations]
    return (f"# PULSE sweep\n\n`{command}`\n\n" + markdown_table(header, rows) +
            "\nBest L2 and best step are those of each result's best image (lowest TOTAL). Seconds are "
            "those logged per search batch (one result each, unless -batch_size > 1). NIQE is scored on "
            "the result images; lower is better, '-' where it cannot be scored.\n")


# ---- main ----------------------------------------------------------------------------------

def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    own, run_argv = split_argv(argv)
    parser = build_parser()
    args = parser.parse_args(own)
    actions = run_flags()
    grid = parse_grid(args.grid, actions, parser)
    check_run_flags(run_argv, grid, parser)
    if "seed" in grid and args.seed is not None:
        parser.error("argument -seed: the seed is already varied by -grid seed=...")
    try:  # the flags after -- once, by run.py's own parser; the grid's values go into copies
        run_args = run_options.parse_args(run_argv)
    except SystemExit as e:
        if e.code != exits.EXIT_USAGE:  # a stop meanwhile, not run.py's parser
            raise
        parser.exit(2, f"{parser.prog}: error: run.py rejects the flags after -- (see above)\n")
    combinations = plan(args, grid, run_args.options, actions, parser)
    import folder_run  # torch and the model's code: after the flags, so --help needs neither
    try:  # the process flags are the same in every combination (they cannot be in -grid)
        folder_run.list_inputs(args.input_dir)  # a missing or empty folder would fail every combination alike
        process = folder_run.start_process(run_args.threads, speedups=not run_args.no_speedups)
    except PulseError as e:
        return exits.report_failure(e, "sweep.py")

    exit_codes = {}
    with quiet_stop.StopSignals() as stop:
        for number, combination in enumerate(combinations, start=1):
            print(f"== {number}/{len(combinations)}: {combination.folder}")
            # In-process rather than a subprocess per combination: torch and the code load once, and
            # the results are the same, since every search draws from its own seeded generator.
            exit_codes[combination.folder] = folder_run.run_folder(combination.options, process, stop)
            if stop.requested:
                break

    table = report(grid, combinations, exit_codes, shlex.join(["python", "sweep.py", *argv]))
    with atomic_path(args.output_dir / TABLE_NAME) as tmp:
        tmp.write_text(table, encoding="utf-8")
    print(table)
    if stop.requested:
        return stop.exit_status
    return 1 if any(exit_codes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
