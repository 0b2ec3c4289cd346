"""A setting's text as its user wrote it, parsed once: -loss_str and -bad_noise_layers.

Low in the house and without torch, so that the settings (settings.py) and the search's parts
(loss.py, search.py) take the same parsed values, and a script's --help needs no torch.
"""
from errors import UsageError

LOSS_NAMES = ("L2", "L1", "GEOCROSS")  # the terms loss.py computes (loss.LOSSES)


class ParsedText(str):
    """A flag's text as written (what the run log keeps and -resume compares), carrying `parsed`,
    what the subclass's `parse` made of it when it was made: the text is parsed once. Made from
    one of its kind, it is that same one; immutable like any str, it is its own deep copy."""

    def __new__(cls, text):
        if isinstance(text, cls):
            return text
        parsed = cls.parse(text)
        made = super().__new__(cls, text)
        made.parsed = parsed
        return made

    def __deepcopy__(self, memo):  # dataclasses.asdict deep-copies: no parsing again
        return self


class LossStringError(UsageError, ValueError):
    """A -loss_str that is not a sum of weight*NAME terms of known losses."""


def parse_terms(loss_str):
    """[(weight, name), ...] from "w*NAME+w*NAME"; LossStringError naming the bad part."""
    known = ", ".join(LOSS_NAMES)
    terms = []
    for term in loss_str.split("+"):
        parts = term.strip().split("*")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise LossStringError(f"bad term {term!r} in loss string {loss_str!r}: write weight*NAME, NAME one of {known}")
        weight, name = (p.strip() for p in parts)
        if name not in LOSS_NAMES:
            raise LossStringError(f"unknown loss {name!r} in {loss_str!r}: known losses are {known}")
        try:
            terms.append((float(weight), name))
        except ValueError:
            raise LossStringError(f"bad weight {weight!r} in {loss_str!r}: must be a number") from None
    return terms


class LossString(ParsedText):
    """A -loss_str such as "100*L2+0.05*GEOCROSS", parsed once into `terms`."""

    @staticmethod
    def parse(text):
        return parse_terms(text)

    @property
    def terms(self):
        return self.parsed


class NoiseLayerError(UsageError, ValueError):
    """The search flags name noise layers that cannot be, or that the model does not have."""


class NoiseLayers(ParsedText):
    """A -bad_noise_layers such as "3.5.17", parsed once into the set `layers`."""

    @staticmethod
    def parse(text):
        try:
            layers = frozenset(int(part) for part in text.split("."))
        except ValueError:
            raise NoiseLayerError(f"{text!r} is not a dot-separated list of layer numbers, e.g. 17 or 3.5.17") from None
        if any(layer < 0 for layer in layers):
            raise NoiseLayerError(f"layer numbers start at 0, got {text!r}")
        return layers

    @property
    def layers(self):
        return self.parsed
