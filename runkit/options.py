"""Options declared once: a dataclass field that carries its default, its help, its range or choices
and how its text is read, from which come run.py's flag, the API's signature and docstring, and the
check of a value however it arrives (a flag, a keyword, a log line, a box of the page).

Plain Python, no torch: the scripts build their --help from declarations alone.
"""
import inspect
import math
import numbers
from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class Whole:
    """A whole number (not a bool) within least..most (no upper end when `most` is None)."""
    least: int
    most: int | None = None

    def words(self):
        within = f"of at least {self.least}" if self.most is None else f"within {self.least}..{self.most}"
        return f"a whole number {within}"

    def holds(self, value):
        return (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= self.least
                and (self.most is None or value <= self.most))

    def read(self, text):
        """The value a flag's text writes; ValueError saying what it must be otherwise."""
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"must be a whole number, got {text!r}") from None
        return check_value(self, value)


@dataclass(frozen=True)
class Finite:
    """A finite number (not a bool) above 0, or with `zero_allowed` of 0 or more."""
    zero_allowed: bool = False

    def words(self):
        return f"a finite number {'of 0 or more' if self.zero_allowed else 'above 0'}"

    def holds(self, value):
        return (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
                and (value >= 0 if self.zero_allowed else value > 0))

    def read(self, text):
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"must be a number, got {text!r}") from None
        return check_value(self, value)


def check_value(rule, value, name=None):
    """`value` if it is what `rule` takes, else ValueError "[name ]must be <rule>, got <value>"."""
    if not rule.holds(value):
        raise ValueError(f"{name + ' ' if name else ''}must be {rule.words()}, got {value!r}")
    return value


def option(default, help, rule=None, parse=None, choices=None, metavar=None):
    """A field of an options dataclass, declared once with all that is made of it: the flag of its
    name (see runkit/flags.py), its `help`, and what it takes: a number within `rule` (Whole,
    Finite), text that `parse` reads (a ParsedText kind), one of `choices`, or True/False for an
    on/off option. An on/off option that is on by default is the flag -no_<name>, and `help` says
    what that flag does."""
    return field(default=default, metadata={"help": help, "rule": rule, "parse": parse or (rule and rule.read),
                                            "choices": choices, "metavar": metavar})


def switched_off(option):
    """Whether the flag of an on/off option is -no_<name> (the option is on by default)."""
    return option.default is True


def check_fields(options):
    """ValueError naming the first field of the dataclass `options` whose value its declaration
    refuses: out of its rule's range, not one of its choices, not True/False for an on/off option
    (None, for a field whose default is None, is "not given")."""
    for f in fields(options):
        value, declared = getattr(options, f.name), f.metadata
        if value is None and f.default is None:
            continue
        if declared["rule"] is not None:
            check_value(declared["rule"], value, f.name)
        elif declared["choices"] is not None and (not isinstance(value, str) or value not in declared["choices"]):
            raise ValueError(f"{f.name} must be one of {', '.join(declared['choices'])}, got {value!r}")
        elif isinstance(f.default, bool) and not isinstance(value, bool):
            raise ValueError(f"{f.name} must be True or False, got {value!r}")


def from_keywords(cls, keywords, what):
    """cls(**keywords), with a TypeError that lists `what` cls takes when a keyword is not one of them."""
    known = [f.name for f in fields(cls)]
    unknown = [name for name in keywords if name not in known]
    if unknown:
        raise TypeError(f"unknown {what} {', '.join(map(repr, unknown))}; the {what}s are {', '.join(known)}")
    return cls(**keywords)


def takes_options(*options):
    """Decorator of a function whose **keywords are the fields of the dataclasses `options`: its
    signature (what help(), inspect and a notebook show) names each with its default, and its
    docstring lists them with their help. The function still takes them as **keywords."""
    def decorate(function):
        signature = inspect.signature(function)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        declared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
                    for each in options for f in fields(each)]
        function.__signature__ = signature.replace(parameters=own + declared)
        function.__doc__ = "\n\n".join([inspect.cleandoc(function.__doc__), *map(listing, options)])
        return function
    return decorate


def listing(options):
    """The fields of `options` with their help, as a docstring lists them."""
    lines = (f"    {f.name}: {'False: ' if switched_off(f) else ''}{f.metadata['help']}" for f in fields(options))
    return f"{options.__name__} (run.py's flags):\n" + "\n".join(lines)
