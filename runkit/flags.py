"""The scripts' flags: every flag as `-name` and `--name`, its default shown once in --help, and the
flags made from declared options (settings.py) with the types their declarations give."""
import argparse
from dataclasses import fields

from runkit.options import Finite, Whole, switched_off


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

def flag_name(option):
    return f"no_{option.name}" if switched_off(option) else option.name


def add_options(group, options):
    """One -name/--name flag per field of the dataclass `options` (see settings.py),
    in field order, each with the default, help, choices and argparse type its field declares
    (see runkit/options.py): an on/off option is a switch, -no_<name> when it is on by default."""
    for option in fields(options):
        name, declared = flag_name(option), option.metadata
        names = (f"-{name}", f"--{name}")
        if isinstance(option.default, bool):
            group.add_argument(*names, action="store_true", help=declared["help"])
            continue
        choices = list(declared["choices"]) if declared["choices"] is not None else None
        parse = declared["parse"] and parsed_by(declared["parse"])
        group.add_argument(*names, type=parse, choices=choices, metavar=declared["metavar"],
                           default=option.default, help=declared["help"])


def declared_type(options, name):
    """The argparse type of the option `name` of the dataclass `options`, for a flag of its own."""
    return parsed_by(next(f for f in fields(options) if f.name == name).metadata["parse"])


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

def parsed_by(parse):
    """An argparse type that reads a flag's text with `parse`; its ValueError becomes a usage error
    that keeps the message (argparse would only say "invalid value")."""
    def parse_flag(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse_flag


positive_int = parsed_by(Whole(1).read)
non_negative_int = parsed_by(Whole(0).read)
positive_float = parsed_by(Finite().read)
non_negative_float = parsed_by(Finite(zero_allowed=True).read)


def add_threads_flag(parser):
    """The -threads flag, as every script that searches takes it (None: cpu_threads.set_threads's default)."""
    parser.add_argument("-threads", "--threads", type=positive_int,
                        help="CPU threads (default: one per physical core that other processes leave free, "
                             "looked at again as each search starts; OMP_NUM_THREADS when set)")
