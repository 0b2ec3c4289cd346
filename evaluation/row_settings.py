"""The -rows of evaluate.py's held-out table: each a change of the 2020 defaults, the search settings (and
the precision) read as run.py reads their flags, and its label in the table."""
import argparse
from dataclasses import fields

from runkit.flags import parsed_by
from settings import ModelOptions, SearchConfig, recipe_config

MODEL_SETTINGS = ("precision",)  # -rows may change these model options besides the search settings
ROW_SETTINGS = {option.name: option for option in fields(SearchConfig)} | {
    option.name: option for option in fields(ModelOptions) if option.name in MODEL_SETTINGS}


def search_settings(row):
    """What a row changes of the search: upsample's keywords (the search settings, the recipe among them)."""
    return {name: value for name, value in row.items() if name not in MODEL_SETTINGS}


def setting_value(option, text):
    """A -rows value read as run.py reads the flag of that setting (its declared parse); on/off for a switch."""
    if isinstance(option.default, bool):
        if text.lower() not in ("on", "off"):
            raise argparse.ArgumentTypeError(f"is on or off, got {text!r}")
        return text.lower() == "on"
    parse = option.metadata["parse"]
    return parsed_by(parse)(text) if parse else text


def settings_row(text):
    """-rows' argument type: 'name=value,name=value' -> {name: value}, checked as upsample checks them."""
    row = {}
    for assignment in text.split(","):
        name, _, value = assignment.partition("=")
        if name not in ROW_SETTINGS or not value:
            raise argparse.ArgumentTypeError(f"{assignment!r} is not NAME=VALUE with a NAME among "
                                             f"{', '.join(ROW_SETTINGS)}")
        try:
            row[name] = setting_value(ROW_SETTINGS[name], value)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{assignment!r}: {e}") from None
    try:
        recipe_config(**search_settings(row))
        ModelOptions(**{k: v for k, v in row.items() if k in MODEL_SETTINGS})
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return row


def row_label(changes):
    """A row's name in the table and the JSON report: its changes as -rows writes them."""
    def shown(value):
        return ("on" if value else "off") if isinstance(value, bool) else value
    return ",".join(f"{name}={shown(value)}" for name, value in changes.items()) or "the 2020 defaults"
