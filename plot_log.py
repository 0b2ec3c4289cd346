"""Loss curves of a PULSE run: one PNG per result in a run log.

    python plot_log.py runs/pulse_log.jsonl [-output_dir DIR]

Each plot shows every logged loss term and TOTAL per step on a log scale, the best step (the
image PULSE kept) as a vertical line and eps, the L2 target, as a horizontal one.
"""
if __name__ == "__main__":  # before the slow imports below: a stop while they load is one line too
    from runkit import quiet_stop
    quiet_stop.install()

import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from errors import PulseError
from runkit import exits, flags, runlog
from runkit.files import atomic_path



class LogError(PulseError, ValueError):
    """A log that cannot be read at all."""


def build_parser():
    parser = flags.parser(
        "Plot the losses per step of every result in a run.py log, one PNG per result "
                    "(<name>_losses.png). If a result was logged more than once, its latest record is plotted.")
    parser.add_argument("log", type=Path, help="the pulse_log.jsonl that run.py wrote")
    parser.add_argument("-output_dir", "--output_dir", type=Path,
                        help="where the PNGs go (default: a plots folder beside the log)")
    return parser


def read_log(path):
    """The log's records, and the problems of its lines that are not records."""
    if not path.is_file():
        raise LogError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    problems = []
    return runlog.read(path, problems), problems


def record_problem(record):
    """Why a log record cannot be plotted, or None."""
    trajectory = record.trajectory
    if not trajectory or not all(isinstance(row, dict) and "step" in row and "TOTAL" in row for row in trajectory):
        return "its trajectory has no steps with a TOTAL loss"
    return None


def loss_names(trajectory):
    """The loss terms of a trajectory in logged order, TOTAL last."""
    names = [name for name in trajectory[0] if name not in ("step", "TOTAL")]
    return names + ["TOTAL"]


def plot_record(record, path):
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)  # draws with Agg: no display needed, no pyplot global state
    axes = figure.add_subplot()
    trajectory = record.trajectory
    steps = [row["step"] for row in trajectory]
    for name in loss_names(trajectory):
        axes.plot(steps, [row.get(name) for row in trajectory], label=name, linewidth=2 if name == "TOTAL" else 1)
    axes.set_yscale("log")
    axes.axvline(record.best_step, color="black", linestyle="--", linewidth=1,
                 label=f"best step {record.best_step}")
    eps = record.args.get("eps")
    if eps:  # a log axis has no 0, so eps 0 gets no line
        axes.axhline(eps, color="tab:red", linestyle=":", label=f"eps {eps:g} (L2 target)")
    axes.set_title(f"{Path(record.output).stem} | seed {record.seed} | {record.status}",
                   color="black" if record.converged else "tab:red")
    axes.set_xlabel("step")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("loss (log scale)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        records, problems = read_log(args.log)
    except PulseError as e:
        return exits.report_failure(e, "plot_log.py")
    for problem in problems:
        print(f"error: {problem}: cannot be plotted", file=sys.stderr)
    if not records:  # damaged lines are failed inputs; no lines at all, nothing to plot from
        print(f"error: {args.log} holds no log records: it is empty or not a JSON-lines log of run.py",
              file=sys.stderr)
        return exits.EXIT_INPUTS_FAILED if problems else exits.EXIT_SETUP_FAILED
    usable = []
    for number, record in enumerate(records, start=1):
        problem = record_problem(record)
        if problem:
            print(f"error: record {number} of {args.log} cannot be plotted: {problem}", file=sys.stderr)
        else:
            usable.append(record)
    out_dir = args.output_dir or args.log.parent / "plots"
    latest = runlog.latest_by_output(usable).values()
    try:
        for record in latest:
            path = out_dir / f"{Path(record.output).stem}_losses.png"
            plot_record(record, path)
            print(path)
    except OSError as e:
        print(f"error: cannot write the plots to {out_dir}: {e}", file=sys.stderr)
        return exits.EXIT_SETUP_FAILED
    if len(latest) < len(usable):
        print(f"note: {len(usable) - len(latest)} earlier record(s) of the same results were superseded "
              f"by later ones", file=sys.stderr)
    return exits.EXIT_INPUTS_FAILED if problems or len(usable) < len(records) else exits.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
