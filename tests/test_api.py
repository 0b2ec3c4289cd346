"""The Python API (PULSE.load, model.upsample, model.render) on the tiny model: the same results as
run.py, every accepted input form, bad inputs refused before any search, stopping, and the
README's example."""
import inspect
import logging
import os
import pydoc
import re
import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest
import torch
from PIL import Image

from runkit import runlog
import PULSE
from device import DeviceError
from conftest import ROOT, TINY_INPUT, TINY_MODEL, log_records, pixels, run_on_tiny_model
from runkit.images import read_rgb
from runkit.image_tensors import to_tensor
from settings import result_settings
from weightfiles.weights import WeightsError

STEPS = 4


@pytest.fixture(scope="module")
def model64():
    return PULSE.load(cache_dir=TINY_MODEL, precision="fp64")


@pytest.fixture(scope="module")
def model32():
    return PULSE.load(cache_dir=TINY_MODEL)


def png_pixels(image, tmp_path):
    """The pixels of `image` as run.py would write them (a PNG, read back)."""
    path = tmp_path / "api.png"
    image.save(path)
    return pixels(path)


@pytest.mark.parametrize("seed", [3, 11])
def test_upsample_gives_exactly_run_pys_results_in_float64(tmp_path, model64, seed):
    out_dir = tmp_path / "run"
    assert run_on_tiny_model(out_dir, "-seed", seed, "-steps", STEPS, "-duplicates", 2, "-precision", "fp64") == 0
    records = log_records(out_dir)
    results = model64.upsample(TINY_INPUT, seed=seed, steps=STEPS, duplicates=2)
    assert [r.name for r in results] == ["target_1", "target_2"]
    assert [r.seed for r in results] == [seed, seed + 1]
    for result, record in zip(results, records):
        assert np.array_equal(png_pixels(result.image, tmp_path), pixels(out_dir / f"{result.name}.png"))
        assert result.trajectory == record["trajectory"]
        assert (result.best_step, result.losses, result.converged) == \
            (record["best_step"], record["losses"], record["converged"])
        assert not result.interrupted and result.steps == STEPS
    assert not np.array_equal(np.asarray(results[0].image), np.asarray(results[1].image))


def test_every_input_form_gives_the_same_result(tmp_path, model64):
    image = read_rgb(TINY_INPUT)
    tensor = to_tensor(image)
    forms = {"path": str(TINY_INPUT), "Path": TINY_INPUT, "PIL": image, "tensor": tensor,
             "batch tensor": tensor[None], "list": [TINY_INPUT, image]}
    want = model64.upsample(TINY_INPUT, seed=0, steps=2)[0]
    for form, images in forms.items():
        results = model64.upsample(images, seed=0, steps=2)
        assert len(results) == (2 if form == "list" else 1), form
        for result in results:
            assert torch.equal(result.tensor, want.tensor), form
            assert result.trajectory == want.trajectory, form
    assert [r.input for r in model64.upsample([TINY_INPUT, image], seed=0, steps=1)] == [str(TINY_INPUT), "image 1"]


def test_a_batch_tensor_gives_one_result_per_image_in_order(model64):
    first, second = to_tensor(read_rgb(TINY_INPUT)), to_tensor(read_rgb(TINY_INPUT)).flip(-1)
    together = model64.upsample(torch.stack([first, second]), seed=5, steps=2, batch_size=2)
    alone = [model64.upsample(image, seed=5, steps=2)[0] for image in (first, second)]
    assert [r.name for r in together] == ["image0", "image1"]
    for got, want in zip(together, alone):
        for g, w in zip(got.trajectory, want.trajectory):
            assert g == pytest.approx(w, rel=1e-9)


@pytest.mark.parametrize("make_bad, reason", [
    (lambda tmp: tmp / "missing.png", "no such file"),
    (lambda tmp: tmp / "notes.txt", "not an image file"),
    (lambda tmp: Image.new("RGB", (16, 12)), "not square"),
    (lambda tmp: Image.new("RGB", (512, 512)), "larger than the 256x256 model"),
    (lambda tmp: Image.new("RGB", (24, 24)), "does not divide 256"),
    (lambda tmp: torch.rand(3, 16, 16) * 2, "within [0, 1]"),
    (lambda tmp: torch.rand(16, 16), "expected a [3, r, r] RGB tensor"),
    (lambda tmp: 42, "is not an image"),
])
def test_an_unusable_image_is_refused_by_name_before_any_search(tmp_path, model64, monkeypatch, make_bad, reason):
    (tmp_path / "notes.txt").write_text("hello")
    monkeypatch.setattr(PULSE, "search_jobs", lambda *_: pytest.fail("a search ran"))
    bad = make_bad(tmp_path)
    with pytest.raises(ValueError) as refused:
        model64.upsample([TINY_INPUT, bad], seed=0, steps=2)
    message = str(refused.value)
    assert reason in message
    assert (str(bad) if isinstance(bad, os.PathLike) else "image 1") in message


@pytest.mark.parametrize("arguments, reason", [
    ({"eps": -1e-3}, "eps must be a finite number of 0 or more, got -0.001"),
    ({"eps": float("inf")}, "eps must be a finite number of 0 or more, got inf"),
    ({"eps": "1"}, "eps must be a finite number of 0 or more, got '1'"),
    ({"learning_rate": float("nan")}, "learning_rate must be a finite number above 0"),
    ({"opt_name": "lbfgs"}, "opt_name must be one of sgd, adam, sgdm, adamax, got 'lbfgs'"),
    ({"noise_type": ["zero"]}, "noise_type must be one of zero, fixed, trainable"),
    ({"bad_noise_layers": "99"}, "noise layers are 0..13"),
    ({"bad_noise_layers": "x"}, "bad_noise_layers: 'x' is not a dot-separated list"),
    ({"bad_noise_layers": [3]}, "bad_noise_layers must be None or text such as '17'"),
    ({"loss_str": "100*L3"}, "loss_str: unknown loss 'L3'"),
    ({"loss_str": 5}, "loss_str must be text"),
    ({"steps": 2.5}, "steps must be a whole number of at least 1, got 2.5"),
    ({"steps": "5"}, "steps must be a whole number of at least 1, got '5'"),
    ({"steps": True}, "steps must be a whole number of at least 1, got True"),
    ({"num_trainable_noise_layers": -1}, "num_trainable_noise_layers must be a whole number of at least 0"),
    ({"tile_latent": "yes"}, "tile_latent must be True or False"),
    ({"duplicates": 0}, "duplicates must be a whole number of at least 1, got 0"),
    ({"batch_size": 0}, "batch_size must be a whole number of at least 1, got 0"),
    ({"seed": -1}, "seed must be a whole number within 0..18446744073709551615, got -1"),
    ({"seed": 2 ** 64 - 1, "duplicates": 2}, "seed must be a whole number within 0..18446744073709551614"),
    ({"seed": 2 ** 64 - 2, "duplicates": 2, "tries": 2}, "seed must be a whole number within 0..18446744073709551612"),
    ({"tries": 0}, "tries must be a whole number of at least 1, got 0"),
    ({"stop_at_eps": 1}, "stop_at_eps must be True or False"),
    ({"on_step": 3}, "on_step must be a function"),
    ({"images": None}, "images must be a path, a PIL image, a [3, r, r] or [B, 3, r, r] tensor, or a list"),
])
def test_a_bad_argument_is_refused_by_name_before_any_search(model64, monkeypatch, arguments, reason):
    monkeypatch.setattr(PULSE, "search_jobs", lambda *_: pytest.fail("a search ran"))
    arguments = {"images": TINY_INPUT, **arguments}
    with pytest.raises(ValueError, match=re.escape(reason)):
        model64.upsample(**arguments)


def test_an_unknown_name_is_a_type_error_listing_the_known_ones(model64, monkeypatch):
    monkeypatch.setattr(PULSE, "search_jobs", lambda *_: pytest.fail("a search ran"))
    with pytest.raises(TypeError, match="unknown search setting 'stepz'; the search settings are loss_str, eps, "):
        model64.upsample(TINY_INPUT, stepz=3)
    with pytest.raises(TypeError, match="unknown model option 'precison'; the model options are network, cache_dir"):
        PULSE.load(cache_dir=TINY_MODEL, precison="fp64")


@pytest.mark.parametrize("arguments, reason", [
    ({"device": 3}, "device must be None, a torch.device or a name"),
    ({"cache_dir": None}, "cache_dir must be a folder's path, got None"),
    ({"network": 3}, "network must be None, a path or a URL"),
    ({"compile": "yes"}, "compile must be True or False"),
    ({"precision": "fp8"}, "precision must be one of"),
])
def test_load_refuses_a_bad_argument_by_name(arguments, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        PULSE.load(**{"cache_dir": TINY_MODEL, **arguments})


def test_load_tells_its_notes_to_the_pulse_logger(caplog):
    caplog.set_level(logging.INFO, logger="pulse")
    PULSE.load(cache_dir=TINY_MODEL)
    assert [record.name for record in caplog.records] == ["pulse"]
    assert caplog.messages[0].startswith(f"note: {TINY_MODEL} is the bundled tiny test model")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_load_on_a_device_that_is_not_there_blames_the_argument(monkeypatch):
    monkeypatch.delenv("PULSE_DEVICE", raising=False)
    with pytest.raises(DeviceError, match=re.escape("device='cuda' asks for CUDA, but torch sees no CUDA GPU")):
        PULSE.load(cache_dir=TINY_MODEL, device="cuda")
    with pytest.raises(DeviceError, match=re.escape("device='cuda:0' asks for CUDA")):
        PULSE.load(cache_dir=TINY_MODEL, device=torch.device("cuda", 0))


def test_render_draws_the_best_image_again(model32, model64):
    for model in (model32, model64):
        (result,) = model.upsample(TINY_INPUT, seed=2, steps=5)
        assert result.latent.shape == (model.num_ws, 512)
        assert [n.shape[-1] for n in result.noise] == model.noise_sizes
        assert model.render(result.latent, result.noise).tobytes() == result.image.tobytes()
    with_tiled = model64.upsample(TINY_INPUT, seed=2, steps=3, tile_latent=True)[0]
    assert with_tiled.latent.shape == (1, 512)
    assert model64.render(with_tiled.latent, with_tiled.noise).tobytes() == with_tiled.image.tobytes()


def test_on_step_sees_every_step_and_can_stop_the_search(model64):
    seen = []

    def watch(step):
        seen.append((step.number, step.losses["L2"].tolist(), step.best_im.shape))
    (result,) = model64.upsample(TINY_INPUT, seed=1, steps=3, on_step=watch)
    assert [number for number, _, _ in seen] == [1, 2, 3]
    assert [l2 for _, l2, _ in seen] == [[row["L2"]] for row in result.trajectory]

    def stop_at_step_2(step):
        if step.number == 2:
            raise KeyboardInterrupt
    results = model64.upsample([TINY_INPUT, TINY_INPUT], seed=1, steps=10, on_step=stop_at_step_2)
    assert len(results) == 1  # the second image was never searched
    assert results[0].interrupted and results[0].steps == 2
    assert results[0].status == "NOT CONVERGED, interrupted after 2 steps"


def test_on_step_tells_the_input_duplicate_and_try_of_each_row(model64):
    seen = []
    image = read_rgb(TINY_INPUT)
    results = model64.upsample([TINY_INPUT, image], seed=10, steps=2, duplicates=2, tries=2, eps=1e-9, batch_size=3,
                               on_step=lambda step: seen.append(step.rows))
    rows = {(row.input, row.name, row.duplicate, row.attempt, row.seed) for step in seen for row in step}
    assert rows == {(source, f"{stem}_{k}", k, t, 10 + (k - 1) + (t - 1) * 2)
                    for source, stem in ((str(TINY_INPUT), "target"), ("image 1", "image1"))
                    for k in (1, 2) for t in (1, 2)}
    assert len(seen[0]) == 3 and all(row.step == 1 for row in seen[0])
    assert [t["seed"] for t in results[3].tries] == [11, 13]


def test_an_input_names_its_results(model64):
    named = PULSE.Input(read_rgb(TINY_INPUT), "face", "my face")
    results = model64.upsample(named, seed=0, steps=1, duplicates=2)
    assert [(r.name, r.input) for r in results] == [("face_1", "my face"), ("face_2", "my face")]
    assert torch.equal(results[0].tensor, model64.upsample(TINY_INPUT, seed=0, steps=1)[0].tensor)


def test_help_shows_every_setting_and_model_option_with_its_default(model64):
    """upsample and load take the declared fields as keywords: inspect and help() show them, defaults included."""
    for function, options, own in ((model64.upsample, PULSE.SearchConfig, ["images", "seed", "duplicates",
                                                                           "batch_size", "on_step"]),
                                   (PULSE.load, PULSE.ModelOptions, ["device"])):
        parameters = inspect.signature(function).parameters
        assert list(parameters) == own + [f.name for f in fields(options)]
        assert all(parameters[f.name].default == f.default for f in fields(options))
        shown = pydoc.render_doc(function, renderer=pydoc.plaintext)
        for f in fields(options):
            assert f"{f.name}: " in shown and f.metadata["help"][:40] in " ".join(shown.split())
    assert "learning_rate: float = 0.4" in pydoc.render_doc(model64.upsample, renderer=pydoc.plaintext)
    upsample = inspect.signature(model64.upsample).parameters  # its own arguments, as JobSettings declares them
    assert all(upsample[f.name].default == f.default for f in fields(PULSE.JobSettings))


def test_a_result_becomes_a_run_log_line(tmp_path, model64):
    (result,) = model64.upsample(TINY_INPUT, seed=0, steps=2)
    result.image.save(tmp_path / "target.png")
    settings = result_settings(PULSE.SearchConfig(steps=2), "fp64", False)
    record = runlog.Record.of(result, tmp_path / "target.png", model64.device, base_seed=0, args=settings)
    runlog.append(tmp_path / runlog.LOG_NAME, record)
    assert runlog.read(tmp_path / runlog.LOG_NAME) == [record]
    assert record.is_complete(settings) and (record.status, record.note) == (result.status, result.note)
    assert {f.name: getattr(record, f.name) for f in fields(runlog.Outcome)} == {
        f.name: getattr(result, f.name) for f in fields(runlog.Outcome)} | {"seconds": round(result.seconds, 3)}


def test_the_model_exposes_its_generator_and_fit(model64):
    latent_in = model64.gaussian_fit["mean"].expand(1, model64.num_ws, -1)
    noise = [torch.zeros(1, 1, size, size, dtype=torch.float64) for size in model64.noise_sizes]
    image = model64.synthesis(latent_in, noise)
    assert image.shape == (1, 3, 256, 256) and image.dtype == torch.float64
    assert set(model64.gaussian_fit) == {"mean", "std"}


def test_load_without_weights_or_network_raises_one_error_listing_the_sources(tmp_path, monkeypatch, http_server):
    from weightfiles import releases
    monkeypatch.setitem(releases.SOURCES, "2020", [])
    monkeypatch.setitem(releases.SOURCES, "ffhq", [releases.Source("a test source", http_server.url("/missing.pkl"),
                                                                   "net.pkl", "0")])
    with pytest.raises(WeightsError) as failed:
        PULSE.load(cache_dir=tmp_path / "cache")
    assert "a test source" in str(failed.value) and "convert_weights.py" in str(failed.value)


def python_in(folder, code, pythonpath=None):
    """`code` run by Python in `folder`, as a notebook there would run it."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.slow
def test_the_api_from_another_folder_and_a_module_of_the_users_of_a_project_modules_name(tmp_path):
    """From another folder PULSE works with its folder first on sys.path, as the README says, even
    beside a device.py of the user's; on PYTHONPATH, behind that file, it names the clash."""
    (tmp_path / "device.py").write_text("def my_device():\n    return 'mine'\n")
    clash = python_in(tmp_path, "import PULSE", pythonpath=ROOT)
    assert clash.returncode == 1
    assert clash.stderr.splitlines()[-1] == (
        f"ImportError: {tmp_path / 'device.py'} stands where PULSE needs its own device.py ({ROOT / 'device.py'}): "
        f"Python allows one module named 'device'. Rename yours, or put {ROOT} first on sys.path and leave "
        f"yours out of this session")
    works = python_in(tmp_path, f"""import sys
sys.path.insert(0, {str(ROOT)!r})
import PULSE
model = PULSE.load(cache_dir={str(TINY_MODEL)!r})
(result,) = model.upsample({str(TINY_INPUT)!r}, seed=0, steps=1)
print(result.steps, result.image.size)
""")
    assert works.returncode == 0, works.stderr
    assert works.stdout == "1 (256, 256)\n"


def readme_python_block():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readmes_python_example_runs_as_written(tmp_path):
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    (tmp_path / "runs").mkdir()
    done = subprocess.run([sys.executable, "-c", readme_python_block()], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["pulse_log.jsonl", "target_1.png", "target_2.png"]
    settings = result_settings(PULSE.SearchConfig(steps=20), "fp64", False)
    assert all(record.is_complete(settings) for record in runlog.read(tmp_path / "runs" / runlog.LOG_NAME))
