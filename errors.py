"""The project's own errors: one base, so that a script catches them all by name.

Each error says in one line what is wrong and what to do. The classes live beside what raises
them (device.DeviceError, runkit.speed.PrecisionError, ...), each derived from PulseError and,
where callers have always caught it so, from ValueError, RuntimeError or OSError as well. A
script ends on one of them with exits.report_failure: a UsageError is a usage error (status 2),
any other means setup failed (status 3).
"""


class PulseError(Exception):
    """An error this project raises on purpose, with a message meant for its user."""

    script_words = None  # the message as the scripts say it, where it differs (see about_setting)


def about_setting(error_class, name, words):
    """An error_class whose message `words(named)` names the setting `name` through named(value): as the
    API's argument, name='value'; in its script_words, which the scripts print, as the flag, -name value."""
    error = error_class(words(lambda value: f"{name}={str(value)!r}"))
    error.script_words = words(lambda value: f"-{name} {value}")
    return error


class UsageError(PulseError):
    """A value given to a script or the API that cannot be taken, found only after the flags were
    parsed (once the model is known, say): a usage error, as a bad flag is."""


class WeightsError(PulseError, RuntimeError):
    """A weights file is missing, damaged or of the wrong kind (the message says which): raised by
    the weights pipeline (weightfiles/) and the generators' readers alike."""
