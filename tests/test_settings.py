"""The search settings and model options, each declared once (PULSE.SearchConfig, PULSE.ModelOptions):
run.py's flags and app.py's are made from the declaration, with the 2020 names and defaults."""
import argparse
from dataclasses import fields

import pytest

import app
import PULSE
import run
import sweep
from run_options import RunOptions
from parsed_text import LossString, NoiseLayers
from runkit import flags
from runkit.options import Finite, Whole

# run.py's search and model flags as the 2020 script and the port before the declaration had them:
# (flag, default, what it takes: a range of numbers, a list of choices, text parsed into a kind, or "switch").
FLAGS_2020 = [
    ("loss_str", "100*L2+0.05*GEOCROSS", LossString),
    ("eps", 2e-3, Finite(zero_allowed=True)),
    ("noise_type", "trainable", ["zero", "fixed", "trainable"]),
    ("num_trainable_noise_layers", 5, Whole(0)),
    ("tile_latent", False, "switch"),
    ("bad_noise_layers", None, NoiseLayers),
    ("opt_name", "adam", ["sgd", "adam", "sgdm", "adamax"]),
    ("learning_rate", 0.4, Finite()),
    ("steps", 100, Whole(1)),
    ("lr_schedule", "linear1cycledrop", ["fixed", "linear1cycle", "linear1cycledrop"]),
    ("tries", 1, Whole(1)),
    ("stop_at_eps", False, "switch"),
    ("patience", 0, Whole(0)),
    ("max_steps", 0, Whole(0)),
    ("recipe", "2020", ["2020", "converge"]),
]
MODEL_FLAGS = [
    ("network", None, None),
    ("cache_dir", "cache", None),
    ("keep_pickle", False, "switch"),
    ("precision", "fp32", ["fp32", "fp64", "bf16", "fp16"]),
    ("no_speedups", False, "switch"),
    ("compile", False, "switch"),
]


def reads_like(parse, rule):
    """Whether the argparse type `parse` takes and refuses the texts that `rule` does, with the same values."""
    def outcome(read, text):
        try:
            return read(text)
        except (ValueError, argparse.ArgumentTypeError):
            return "refused"
    return all(outcome(parse, text) == outcome(rule.read, text)
               for text in ("0", "1", "-1", "2", "2.5", "1e-12", "inf", "nan", "abc", ""))


def takes(action, kind):
    """Whether a flag takes what `kind` says: a switch, these choices, text parsed into this kind, or
    numbers within this range."""
    if kind == "switch":
        return action.nargs == 0
    if isinstance(kind, list):
        return action.choices is not None and list(action.choices) == kind
    if isinstance(kind, type):
        return isinstance(action.type("3" if kind is NoiseLayers else "100*L2"), kind)
    if kind is None:  # plain text
        return action.type is None and action.choices is None
    return action.choices is None and reads_like(action.type, kind)


@pytest.mark.parametrize("script, expected", [(run, FLAGS_2020 + MODEL_FLAGS), (app, MODEL_FLAGS)])
def test_the_flags_made_from_the_declaration_are_the_2020_ones(script, expected):
    actions = script.build_parser().flags()
    for name, default, kind in expected:
        action = actions[name]
        assert action.option_strings == [f"-{name}", f"--{name}"], name
        assert action.default == default and takes(action, kind), name
        assert action.help, name


def test_every_declared_field_is_a_flag_with_its_declared_help():
    actions = run.build_parser().flags()
    for options in (PULSE.SearchConfig, PULSE.ModelOptions, PULSE.JobSettings):
        for option in fields(options):
            assert actions[flags.flag_name(option)].help == option.metadata["help"]
    assert [name for name, _, _ in FLAGS_2020] == [f.name for f in fields(PULSE.SearchConfig)]


def test_the_flags_give_the_declared_options():
    args = run.parse_args(["-no_speedups", "-steps", "7", "-loss_str", "100*L2", "-precision", "fp64"])
    options = RunOptions.from_args(args)
    assert options.model == PULSE.ModelOptions(speedups=False, precision="fp64")
    assert options.search == PULSE.SearchConfig(steps=7, loss_str="100*L2")
    assert isinstance(options.search.loss_str, LossString)
    assert run.parse_args([]).options.search == PULSE.SearchConfig()


def test_the_network_help_names_the_packaged_generators():
    help_text = PULSE.ModelOptions.__dataclass_fields__["network"].metadata["help"]
    assert "dcgan-digiface" in help_text and "rosinality" in help_text and "StyleGAN3" in help_text


def test_a_sweep_can_vary_every_search_setting():
    actions = sweep.run_flags()
    assert {f.name for f in fields(PULSE.SearchConfig)} <= set(actions)
    parser = sweep.build_parser()
    with pytest.raises(SystemExit):
        sweep.flag_value("opt_name", "lbfgs", actions, parser)
    assert sweep.flag_value("steps", "3", actions, parser) == 3
    with pytest.raises(argparse.ArgumentTypeError):
        actions["learning_rate"].type("0")


def test_the_names_settings_declare_are_the_ones_the_search_computes():
    """settings.py names the optimizers, precisions and loss terms without importing torch; the modules
    that make them must know exactly those names."""
    import loss
    import parsed_text
    import search
    import settings
    from runkit import speed
    assert tuple(search.OPTIMIZERS) == settings.OPTIMIZERS
    assert tuple(speed.DTYPES) == settings.PRECISIONS
    assert tuple(loss.LOSSES) == parsed_text.LOSS_NAMES
