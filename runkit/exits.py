"""How every command-line script ends: one of these statuses, and for a failure one line on stderr.

  0    everything done
  1    some inputs failed (each named on stderr); the others are done
  2    a usage error: a bad flag or flag value (argparse's status)
  3    setup failed: a missing device, unusable weights, an output folder that cannot be written,
       inputs that cannot all be written apart; nothing was searched
  128+N  stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP) after saving what was done
         (runkit/quiet_stop.py)
"""
import sys

from errors import PulseError, UsageError

EXIT_OK, EXIT_INPUTS_FAILED, EXIT_USAGE, EXIT_SETUP_FAILED = 0, 1, 2, 3
EXIT_STATUSES = ("exit status: 0 all done; 1 some inputs failed (each named); 2 bad flags; 3 setup failed "
                 "(device, weights, folders, clashing names), nothing was done; 128+N stopped by signal N "
                 "(130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), what was done is saved")


class SetupError(PulseError, RuntimeError):
    """The run cannot start (the message says why and what to do); main prints it as one line."""


def report_failure(error, script, tag=str):
    """Say on stderr, in one line, why `script` ends (`error`: one of the project's errors, or an
    OSError where the script expects one) and return its exit status: a UsageError is worded as
    argparse words a bad flag (`run.py: error: ...`, status 2); anything else means setup failed
    (`error: ...`, status 3). `tag` marks the line with its process in a torchrun job."""
    usage, message = isinstance(error, UsageError), script_message(error)
    print(tag(f"{script}: error: {message}" if usage else f"error: {message}"), file=sys.stderr)
    return EXIT_USAGE if usage else EXIT_SETUP_FAILED


def script_message(error):
    """An error's message as a script says it: a setting named by its flag (see errors.about_setting)."""
    return getattr(error, "script_words", None) or str(error)
