"""What the library says on the `pulse` logger (progress, notes, warnings), shown by a script as
plain lines on its stderr."""
import logging
import sys

from tqdm import tqdm


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
