"""How a script stops on a signal: at any moment, one line and the status 128+N (exits.py's table).

Every script, run as a script, calls `install()` first, before importing torch and the rest,
which take seconds to load. From then on Ctrl-C, SIGTERM or SIGHUP ends it with "interrupted"
on stderr and the status 128+N (130, 143, 129), rather than a KeyboardInterrupt
traceback from inside whatever was running. The stop is a SystemExit, so `finally` blocks still
run (a half-written file is removed); inside an import it leaves at once instead, as unwinding a
C extension's half-done initialisation can abort the interpreter on its way out (nothing is
being written then). StopSignals, below, takes over while there are results
to save and puts this handler back when it is done. Only the interpreter's own start-up, the few
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
