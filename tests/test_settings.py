"""The search settings and model options, each declared once (PULSE.SearchConfig, PULSE.ModelOptions):
run.py's flags and app.py's are made from the declaration, with the 2020 names and defaults."""
import argparse
from dataclasses import fields

import pytest

import app
import PULSE
import run
import sweep
from loss import LossString
from runkit import cli

# run.py's search and model flags as the 2020 script and the port before the declaration had them:
# (flag, default, what it takes: an argparse type, a list of choices, or "switch").
FLAGS_2020 = [
    ("loss_str", "100*L2+0.05*GEOCROSS", LossString),
    ("eps", 2e-3, cli.non_negative_float),
    ("noise_type", "trainable", ["zero", "fixed", "trainable"]),
    ("num_trainable_noise_layers", 5, cli.non_negative_int),
    ("tile_latent", False, "switch"),
    ("bad_noise_layers", None, PULSE.NoiseLayers),
    ("opt_name", "adam", ["sgd", "adam", "sgdm", "adamax"]),
    ("learning_rate", 0.4, cli.positive_float),
    ("steps", 100, cli.positive_int),
    ("lr_schedule", "linear1cycledrop", ["fixed", "linear1cycle", "linear1cycledrop"]),
    ("tries", 1, cli.positive_int),
    ("stop_at_eps", False, "switch"),
    ("patience", 0, cli.non_negative_int),
    ("max_steps", 0, cli.non_negative_int),
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


def takes(action, kind):
    """Whether a flag takes what `kind` says: a switch, these choices, text parsed into this kind, or
    text given to this argparse type."""
    if kind == "switch":
        return action.nargs == 0
    if isinstance(kind, list):
        return action.choices is not None and list(action.choices) == kind
    if isinstance(kind, type):
        return isinstance(action.type("3" if kind is PULSE.NoiseLayers else "100*L2"), kind)
    return action.type is kind and action.choices is None


@pytest.mark.parametrize("script, expected", [(run, FLAGS_2020 + MODEL_FLAGS), (app, MODEL_FLAGS)])
def test_the_flags_made_from_the_declaration_are_the_2020_ones(script, expected):
    flags = script.build_parser().flags()
    for name, default, kind in expected:
        action = flags[name]
        assert action.option_strings == [f"-{name}", f"--{name}"], name
        assert action.default == default and takes(action, kind), name
        assert action.help, name


def test_every_declared_field_is_a_flag_with_its_declared_help():
    flags = run.build_parser().flags()
    for options in (PULSE.SearchConfig, PULSE.ModelOptions):
        for option in fields(options):
            assert flags[cli.flag_name(option)].help == option.metadata["help"]
    assert [name for name, _, _ in FLAGS_2020] == [f.name for f in fields(PULSE.SearchConfig)]


def test_the_flags_give_the_declared_options():
    args = run.parse_args(["-no_speedups", "-steps", "7", "-loss_str", "100*L2", "-precision", "fp64"])
    options = run.RunOptions.from_args(args)
    assert options.model == PULSE.ModelOptions(speedups=False, precision="fp64")
    assert options.search == PULSE.SearchConfig(steps=7, loss_str="100*L2")
    assert isinstance(options.search.loss_str, LossString)
    assert run.RunOptions.from_args(run.parse_args([])).search == PULSE.SearchConfig()


def test_the_network_help_names_the_packaged_generators():
    help_text = PULSE.ModelOptions.__dataclass_fields__["network"].metadata["help"]
    assert "dcgan-digiface" in help_text and "rosinality" in help_text and "StyleGAN3" in help_text


def test_a_sweep_can_vary_every_search_setting():
    flags = sweep.run_flags()
    assert {f.name for f in fields(PULSE.SearchConfig)} <= set(flags)
    parser = sweep.build_parser()
    with pytest.raises(SystemExit):
        sweep.flag_value("opt_name", "lbfgs", flags, parser)
    assert sweep.flag_value("steps", "3", flags, parser) == 3
    with pytest.raises(argparse.ArgumentTypeError):
        flags["learning_rate"].type("0")
