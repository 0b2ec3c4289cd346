"""A setting's text as its user wrote it, parsed once: the kind of -loss_str and -bad_noise_layers.

Low in the house, with no import of the project's, so that the search's parts (loss.py, PULSE.py)
can make their settings of it.
"""


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
