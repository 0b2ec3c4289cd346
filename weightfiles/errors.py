"""The error of the weights pipeline, low enough that every module of it can raise it."""


class WeightsError(RuntimeError):
    """A weights file is missing, damaged or of the wrong kind (the message says which)."""
