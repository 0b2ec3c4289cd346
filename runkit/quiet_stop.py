"""A stop before a script's own signal handling, or after it: one line and the status 128+N.

Every script, run as a script, calls `install()` first, before importing torch and the rest,
which take seconds to load. From then on Ctrl-C, SIGTERM or SIGHUP ends it with "interrupted"
on stderr and the status of cli.py's table (130, 143, 129), rather than a KeyboardInterrupt
traceback from inside whatever was running. The stop is a SystemExit, so `finally` blocks still
run (a half-written file is removed); inside an import it leaves at once instead, as unwinding a
C extension's half-done initialisation can abort the interpreter on its way out (nothing is
being written then). cli.StopSignals takes over while there are results to
save and puts this handler back when it is done. Only the interpreter's own start-up, the few
milliseconds before a script's first line, is left to Python's defaults.

It imports nothing heavy, so that it is in place at once. Imported by the tests or by another
program, it changes nothing until `install()` is called.
"""
import os
import signal
import sys
from contextlib import contextmanager

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def stop(signum, frame):
    """Say so in one line and exit with 128+N; a repeat while exiting leaves at once."""
    for each in STOP_SIGNALS:
        signal.signal(each, leave_at_once)
    print("interrupted", file=sys.stderr, flush=True)
    if importing(frame):
        leave_at_once(signum, frame)
    raise SystemExit(128 + signum)


def importing(frame):
    """Whether `frame` runs inside an import (Python's import machinery is among its callers)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def leave_at_once(signum, frame):
    os._exit(128 + signum)


def install():
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)


@contextmanager
def children_ignore_ctrl_c():
    """Processes started inside the block ignore Ctrl-C all their life, their imports included
    (an ignored signal stays ignored across exec, and Python then installs no KeyboardInterrupt
    handler). Ctrl-C reaches every process of the terminal's group: the parent alone says that it
    stopped, and its workers end with it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
