"""PULSE on a folder of aligned low-resolution faces: `python run.py -input_dir input -output_dir runs`.

Every input gets its best high-resolution image written as `<output_dir>/<stem>.png` (or
`<stem>_<k>.png` with -duplicates), even when the search did not reach eps (then it is flagged
NOT CONVERGED), and one line in `<output_dir>/pulse_log.jsonl`. -strip and -gif add pictures
of the results and of the searches (see runkit/visuals.py).

This file is the command line: the flags (run_options.py) and the folder run
(folder_run.py) over the model and the search (PULSE.py, search.py).
"""
if __name__ == "__main__":  # first: a stop while the rest loads is one line too
    from runkit import quiet_stop
    quiet_stop.install()

import sys

from errors import PulseError
from runkit import exits, messages, quiet_stop
from run_options import build_parser, parse_args

__all__ = ["main", "build_parser", "parse_args"]  # build_parser: every script has one (the tests read its flags)


def main(argv=None):
    """run.py; returns its exit status (see runkit/exits.py)."""
    args = parse_args(argv)
    import folder_run  # torch and the model's code: after the flags, so --help needs neither
    messages.show_messages()
    try:
        process = folder_run.start_process(args.threads, speedups=not args.no_speedups)
    except PulseError as e:
        return exits.report_failure(e, "run.py")
    # In a torchrun job a stop reaches each process twice (from the terminal or Slurm, then from
    # torchrun passing it on): the repeat must not cut the writing of the results short.
    with quiet_stop.StopSignals(repeat_leaves=process.launch.world_size == 1) as stop:
        return folder_run.run_folder(args.options, process, stop)


if __name__ == "__main__":
    sys.exit(main())
