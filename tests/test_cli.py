"""What every script shares: flag types, -name and --name, stop signals, the errors it ends on."""
import argparse
import importlib
import re
import signal
import subprocess
import sys

import pytest

from runkit import exits, flags, quiet_stop
from conftest import ROOT

SCRIPTS = ["run", "align_face", "convert_weights", "evaluate", "plot_log", "sweep", "bench", "app"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_takes_one_dash_and_two(script):
    parser = importlib.import_module(script).build_parser()
    for action in parser.flags().values():
        names = [name for name in action.option_strings if name not in ("-h", "--help")]
        singles = {name[1:] for name in names if not name.startswith("--")}
        doubles = {name[2:] for name in names if name.startswith("--")}
        assert singles == doubles, f"{script}: {names}"


def help_entries(script, capsys):
    """`script.py --help`, one string per flag (argparse wraps a flag's help over several lines)."""
    with pytest.raises(SystemExit) as done:
        importlib.import_module(script).main(["--help"])
    assert done.value.code == 0
    entries = re.split(r"\n(?=  -)", capsys.readouterr().out)[1:]  # each flag's entry begins "  -name"
    entries = [entry.split("\n\n")[0] for entry in entries]  # a group's last entry: not the next group's title
    return {entry.split()[0].rstrip(","): " ".join(entry.split()) for entry in entries}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_each_default_once_and_none_that_says_nothing(script, capsys):
    for flag, entry in help_entries(script, capsys).items():
        assert entry.count("(default") <= 1, entry
        assert "default: None" not in entry and "default: False" not in entry, entry


def test_help_shows_the_defaults(capsys):
    entries = help_entries("run", capsys)
    assert entries["-steps"].endswith("(default: 100)")
    assert "(default: one per physical core that other processes leave free" in entries["-threads"]


@pytest.mark.parametrize("text", ["0", "-1", "inf", "-inf", "nan"])
def test_positive_float_refuses_what_cannot_be_a_rate_or_a_target(text):
    with pytest.raises(argparse.ArgumentTypeError):
        flags.positive_float(text)


def test_positive_float_takes_small_numbers():
    assert flags.positive_float("1e-12") == 1e-12


@pytest.mark.parametrize("text", ["-1e-12", "inf", "nan", "zero"])
def test_non_negative_float_refuses_what_cannot_be_a_target(text):
    with pytest.raises(argparse.ArgumentTypeError):
        flags.non_negative_float(text)


def test_non_negative_float_takes_zero():
    assert flags.non_negative_float("0") == 0 and flags.non_negative_float("2e-3") == 2e-3


def test_a_stop_signal_interrupts_unless_deferred_and_a_second_one_leaves_at_once(monkeypatch):
    def leave(status):
        raise SystemExit(status)  # os._exit, without ending the test process
    monkeypatch.setattr(quiet_stop.os, "_exit", leave)
    with quiet_stop.StopSignals() as stop:
        assert signal.getsignal(signal.SIGTERM) == stop._handle
        with stop.deferred():
            stop._handle(signal.SIGTERM, None)  # noted, not raised
        assert stop.requested and stop.exit_status == 143
        with pytest.raises(SystemExit) as left:
            stop._handle(signal.SIGHUP, None)
        assert left.value.code == 129
    assert signal.getsignal(signal.SIGTERM) != stop._handle  # restored on exit


def test_the_first_stop_signal_raises_keyboard_interrupt():
    with quiet_stop.StopSignals() as stop:
        with pytest.raises(KeyboardInterrupt):
            stop._handle(signal.SIGHUP, None)
        assert stop.exit_status == 129


# ---- the project's errors ------------------------------------------------------------------------

PROJECT_MODULES = [*SCRIPTS, "errors", "PULSE", "device", "parsed_text", "generators.dcgan", "runkit.exits",
                   "runkit.speed", "runkit.images", "runkit.distributed", "weightfiles.download",
                   "webpage.uploads"]
KEPT_BASES = {"SetupError": RuntimeError, "PrecisionError": ValueError, "ImageReadError": ValueError,
              "TeamError": RuntimeError, "NoiseLayerError": ValueError, "WeightsError": RuntimeError,
              "DownloadError": OSError, "UploadError": ValueError, "LossStringError": ValueError,
              "DeviceError": RuntimeError, "LogError": ValueError}


def test_every_error_of_the_project_derives_from_one_base_and_keeps_its_own():
    from errors import PulseError
    found = {}
    for name in PROJECT_MODULES:
        module = importlib.import_module(name)
        found.update({value.__name__: value for value in vars(module).values()
                      if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == name})
    assert set(KEPT_BASES) <= set(found)
    for name, error in found.items():
        assert issubclass(error, PulseError), name
        assert name not in KEPT_BASES or issubclass(error, KEPT_BASES[name]), name


def test_a_usage_error_ends_a_script_as_a_bad_flag_does_any_other_as_setup_failed(capsys):
    from parsed_text import NoiseLayerError
    from weightfiles.weights import WeightsError
    assert exits.report_failure(NoiseLayerError("no layer 9"), "run.py") == exits.EXIT_USAGE
    assert exits.report_failure(WeightsError("no weights"), "run.py", tag=lambda line: f"[rank 1] {line}") == 3
    assert exits.report_failure(OSError("disk full"), "convert_weights.py") == exits.EXIT_SETUP_FAILED
    assert capsys.readouterr().err == "run.py: error: no layer 9\n[rank 1] error: no weights\nerror: disk full\n"


@pytest.mark.parametrize("script", ["run.py", "evaluate.py", "sweep.py", "app.py", "align_face.py"])
def test_help_is_made_without_torch(script):
    """--help and a bad flag answer at once: the flags are made from declarations that import no torch."""
    check = ("import runpy, sys\n"
             f"sys.argv = [{script!r}, '--help']\n"
             "try:\n"
             f"    runpy.run_path({script!r}, run_name='__main__')\n"
             "except SystemExit as e:\n"
             "    assert e.code == 0\n"
             "print('torch' in sys.modules, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr
    assert done.stderr.strip() == "False"
