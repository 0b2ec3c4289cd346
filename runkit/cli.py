"""What the project's command-line scripts share: flag types, exit statuses, messages, and stopping on a signal.

Every script takes its flags as `-name` and `--name`, shows their defaults in `--help`, and ends
with one of these statuses:
  0    everything done
  1    some inputs failed (each named on stderr); the others are done
  2    a usage error: a bad flag or flag value (argparse's status)
  3    setup failed: a missing device, unusable weights, an output folder that cannot be written,
       inputs that cannot all be written apart; nothing was searched
  128+N  stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP) after saving what was done
"""
import argparse
import logging
import math
import os
import signal
import sys
from contextlib import contextmanager
from dataclasses import fields

from tqdm import tqdm

from errors import PulseError, UsageError
from runkit.quiet_stop import STOP_SIGNALS

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


class StderrLines(logging.Handler):
    """Each record as its message alone, on the sys.stderr of the moment (a test's capture), above
    the progress bars: a note that comes during a search does not land in the middle of a bar."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # as logging.StreamHandler does: a handler that fails reports and goes on
            self.handleError(record)


def show_messages():
    """Show what the library says on the `pulse` logger (its progress and notes, warnings) as plain
    lines on stderr: what a script does first; the library itself only logs."""
    logger = logging.getLogger("pulse")
    logger.setLevel(logging.INFO)
    if not any(isinstance(handler, StderrLines) for handler in logger.handlers):
        logger.addHandler(StderrLines())


class Parser(argparse.ArgumentParser):
    """argparse's parser, able to list its flags (argparse keeps them in a private list)."""

    def flags(self):
        """{destination name: argparse action} of every flag (not the positional arguments)."""
        return {action.dest: action for action in self._actions if action.option_strings}


class OneDefaultFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: ...)" after each flag's help, unless the help writes its own "(default ...)"
    (one argparse cannot show, such as "the number of physical cores"), or the default is None or
    False (nothing set, a switch that is off), which would say nothing."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


def parser(description=None, **kwargs):
    """An argument parser that shows every flag's default in --help, once, as all the scripts do."""
    return Parser(description=description, formatter_class=OneDefaultFormatter, **kwargs)


# ---- flags made from declared options -------------------------------------------------------

def switched_off(option):
    """The flag of an on/off option that is on by default: -no_<name>."""
    return option.default is True


def flag_name(option):
    return f"no_{option.name}" if switched_off(option) else option.name


def add_options(group, options):
    """One -name/--name flag per field of the dataclass `options` (PULSE.SearchConfig, ModelOptions),
    in field order, each with the default, help, choices and argparse type its field declares
    (see PULSE.option): an on/off option is a switch, -no_<name> when it is on by default."""
    for option in fields(options):
        name, declared = flag_name(option), option.metadata
        names = (f"-{name}", f"--{name}")
        if isinstance(option.default, bool):
            group.add_argument(*names, action="store_true", help=declared["help"])
            continue
        choices = list(declared["choices"]) if declared["choices"] is not None else None
        group.add_argument(*names, type=declared["parse"], choices=choices, metavar=declared["metavar"],
                           default=option.default, help=declared["help"])


def option_values(options, args, given=None):
    """{field name: value} of the parsed flags that add_options made for the dataclass `options`; with
    `given` (the destinations of the flags on the command line, see given_flags), only those flags'."""
    return {option.name: not getattr(args, flag_name(option)) if switched_off(option) else getattr(args, option.name)
            for option in fields(options) if given is None or flag_name(option) in given}


def options_from(options, args):
    """The dataclass `options` of parsed flags that add_options made."""
    return options(**option_values(options, args))


def given_flags(parser, argv=None):
    """The destinations of the flags that `argv` (by default the command line's) gives, whatever their
    values: what a flag equal to its default tells apart from one left out. `argv` must parse; its
    values are not parsed again (a flag's text is parsed once)."""
    actions = list(parser.flags().values())
    declared = [(action.default, action.type, action.choices) for action in actions]
    try:
        for action in actions:  # a flag left out then stays out of the namespace; a given one, as text
            action.default, action.type, action.choices = argparse.SUPPRESS, None, None
        return set(vars(parser.parse_known_args(argv)[0]))
    finally:
        for action, (default, type_, choices) in zip(actions, declared):
            action.default, action.type, action.choices = default, type_, choices


# ---- flag types ----------------------------------------------------------------------------

def whole_number(text):
    """The int a flag's text writes; a usage error that says so otherwise (argparse alone would say
    "invalid positive_int value")."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def positive_int(text):
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text):
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def parsed_by(parse):
    """An argparse type that parses a flag's text with `parse`; its ValueError becomes a usage error
    that keeps the message (argparse would only say "invalid value")."""
    def parse_flag(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse_flag


def finite_float(text, above_zero):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (math.isfinite(value) and (value > 0 if above_zero else value >= 0)):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a finite number {'above 0' if above_zero else 'of 0 or more'}, "
                                         f"got {text}")
    return value


def positive_float(text):
    return finite_float(text, above_zero=True)


def non_negative_float(text):
    return finite_float(text, above_zero=False)


# ---- stopping on a signal ------------------------------------------------------------------

class StopSignals:
    """Ctrl-C, SIGTERM (timeout, Slurm, docker stop, Kubernetes) and SIGHUP all stop a run the same way:
    a KeyboardInterrupt in the main thread, so the search ends with its best image so far, which is
    then written and logged. Inside `deferred()` (while results are written) a signal is only noted,
    for the caller to act on after the block. A second signal leaves at once, unless
    `repeat_leaves` is False: in a torchrun job, where every stop comes twice (the launcher
    passes on what it got) and the launcher's own timeout ends a process that does not stop.

    A context manager: the handlers are installed on entry and the previous ones restored on exit
    (in a script, quiet_stop's: a stop after the results are saved is one line too), so a
    script's main installs them once and tests can call it without lasting side effects."""

    def __init__(self, repeat_leaves=True):
        self.repeat_leaves = repeat_leaves
        self.signum = None
        self._deferring = False
        self._previous = {}

    def __enter__(self):
        self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False

    @property
    def requested(self):
        return self.signum is not None

    @property
    def exit_status(self):
        return 128 + (self.signum or signal.SIGINT)

    def _handle(self, signum, frame):
        if self.requested:
            if self.repeat_leaves:
                os._exit(128 + signum)
            return
        self.signum = signum
        if not self._deferring:
            raise KeyboardInterrupt

    @contextmanager
    def deferred(self):
        """Let the block finish; a signal that arrives meanwhile only sets `requested`."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
