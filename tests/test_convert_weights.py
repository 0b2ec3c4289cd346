"""convert_weights.py against synthetic pickles laid out like NVIDIA's StyleGAN-1 release
(built by tests/stylegan1_pickles.py)."""
import dataclasses
import io
import json
import logging
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from weightfiles import conversion, families, nvidia_layouts, nvidia_pickles, releases, weights
import convert_weights
from runkit.files import file_md5
from conftest import QUICK_FIT_DRAWS, ROOT, TINY_INPUT, TINY_MODEL, Payload, convert_quickly, load_fixture
from stylegan import G_mapping, G_synthesis, synthesis_from_state_dict
from stylegan1_pickles import EasyDict, Network, dump, dumps, nvidia_tuple, randomised, tf_synthesis_variables


@pytest.fixture(scope="module")
def mapping():
    return randomised(G_mapping(), seed=2)


# --- conversion ------------------------------------------------------------------------------

@pytest.mark.parametrize("resolution", [32, 128])  # 128 uses the fused upscale conv
def test_conversion_gives_back_the_source_generator(tmp_path, mapping, resolution):
    source = randomised(G_synthesis(resolution=resolution, fmap_base=64, fmap_max=16), seed=resolution)
    marker = tmp_path / "build_module_src_ran"
    build_src = f"import pathlib; pathlib.Path({str(marker)!r}).touch()"
    pkl = dump(nvidia_tuple(source, mapping, build_src), tmp_path / "tiny.pkl")

    convert_quickly(pkl, tmp_path / "cache")

    converted = weights.load_network(tmp_path / "cache", "synthesis")
    expected_state = source.state_dict()
    got_state = converted.state_dict()
    assert list(got_state) == list(expected_state)
    assert all(torch.equal(got_state[k], expected_state[k]) for k in expected_state)
    torch.manual_seed(0)
    dlatents = torch.randn(1, source.num_layers, 512)
    noise = [torch.randn(1, 1, 2 ** (i // 2 + 2), 2 ** (i // 2 + 2)) for i in range(source.num_layers)]
    with torch.no_grad():
        assert torch.equal(converted(dlatents, noise), source(dlatents, noise))
    assert not marker.exists()


def test_the_2020_synthesis_file_comes_back_key_for_key():
    """The tiny 2020-layout fixture, through TF names and back: same keys, same order, same bits."""
    state = load_fixture(TINY_MODEL / "synthesis.pt")
    model = synthesis_from_state_dict(state)
    model.load_state_dict(state)
    converted = nvidia_layouts.convert_synthesis(dict(tf_synthesis_variables(model)))
    saved = families.build("stylegan1", "synthesis", converted, {}, "the test").state_dict()  # what is saved
    assert list(saved) == list(state)
    assert all(torch.equal(saved[k], state[k]) for k in state)


@pytest.fixture(scope="module")
def converted_cache(tmp_path_factory, mapping):
    folder = tmp_path_factory.mktemp("converted")
    source = randomised(G_synthesis(resolution=32, fmap_base=64, fmap_max=16), seed=3)
    pkl = dump(nvidia_tuple(source, mapping), folder / "tiny.pkl")
    convert_quickly(pkl, folder / "cache")
    return folder / "cache"


def test_mapping_and_gaussian_fit_are_written(converted_cache, mapping):
    cache = converted_cache
    converted = weights.load_network(cache, "mapping")
    assert all(torch.equal(v, mapping.state_dict()[k]) for k, v in converted.state_dict().items())
    fit = weights.load_gaussian_fit(cache / "gaussian_fit.pt")
    expected = weights.fit_gaussian(mapping, draws=QUICK_FIT_DRAWS)
    assert torch.equal(fit["mean"], expected["mean"]) and torch.equal(fit["std"], expected["std"])

    synthesis, prior = weights.load_generator(cache)
    assert synthesis.resolution == 32 and torch.equal(prior.fit["mean"], fit["mean"])
    record = weights.read_record(cache)
    assert record == {"family": "stylegan1", "attributes": {}, "source": str(cache.parent / "tiny.pkl"),
                      "md5": file_md5(cache.parent / "tiny.pkl")}


def test_run_py_searches_with_the_converted_cache(converted_cache, tmp_path):
    import run
    out = tmp_path / "out"
    assert run.main(["-input_dir", str(TINY_INPUT.parent), "-cache_dir", str(converted_cache),
                     "-output_dir", str(out), "-seed", "0", "-steps", "2"]) == 0
    assert (out / f"{TINY_INPUT.stem}.png").is_file()


def pretend_nvidia_released(monkeypatch, name, path):
    """NVIDIA's `name` release, as if the file at `path` were its pickle (its MD5 the release's)."""
    release = dataclasses.replace(releases.NVIDIA_PICKLES[name], md5=file_md5(path))
    monkeypatch.setitem(releases.NVIDIA_PICKLES, name, release)


def test_nvidia_files_are_recognised_by_md5(tmp_path, monkeypatch, caplog):
    pkl = tmp_path / "some.pkl"
    pkl.write_bytes(b"not really a pickle")
    pretend_nvidia_released(monkeypatch, "celebahq", pkl)
    caplog.set_level(logging.INFO, logger="pulse")
    conversion.report_network(pkl)
    assert [(r.levelname, r.message) for r in caplog.records] == [
        ("INFO", "recognised NVIDIA's CelebA-HQ 1024x1024 (karras2019stylegan-celebahq-1024x1024.pkl)")]


def test_the_ffhq_model_keeps_the_bundled_2020_gaussian_fit(tmp_path, mapping, monkeypatch):
    source = randomised(G_synthesis(resolution=8, fmap_base=32, fmap_max=8), seed=5)
    pkl = dump(nvidia_tuple(source, mapping), tmp_path / "ffhq.pkl")
    pretend_nvidia_released(monkeypatch, "ffhq", pkl)
    convert_quickly(pkl, tmp_path / "cache")
    fit = weights.load_gaussian_fit(tmp_path / "cache" / "gaussian_fit.pt")
    bundled = weights.load_gaussian_fit(ROOT / "gaussian_fit.pt")
    assert families.BUNDLED_FIT == ROOT / "gaussian_fit.pt"
    assert torch.equal(fit["mean"], bundled["mean"]) and torch.equal(fit["std"], bundled["std"])


def test_pickles_written_by_numpy_1_load():
    """NVIDIA's file names numpy.core.multiarray (numpy 1.x); this numpy writes numpy._core."""
    data = dumps([np.arange(6, dtype=np.float32).reshape(2, 3), np.float32(0.5), EasyDict(a=1)])
    if b"numpy._core.multiarray" in data:  # rename it, fixing the length byte and the frame size
        assert data[2:3] == pickle.FRAME
        renamed = data.replace(b"\x8c\x16numpy._core.multiarray", b"\x8c\x15numpy.core.multiarray")
        frame = int.from_bytes(data[3:11], "little") - (len(data) - len(renamed))
        data = renamed[:3] + frame.to_bytes(8, "little") + renamed[11:]
    assert b"numpy.core.multiarray" in data
    array, scalar, easydict = nvidia_pickles.AllowlistUnpickler(io.BytesIO(data)).load()
    assert array.tolist() == [[0, 1, 2], [3, 4, 5]] and scalar == 0.5 and easydict == {"a": 1}


def test_weight_layouts_follow_tensorflow_semantics():
    """tf.nn.conv2d correlates with w[dy, dx, in, out]; tf.matmul(x, w) takes w as [in, out]."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 5, 6, 6), dtype=np.float32)
    w = rng.standard_normal((3, 3, 5, 4), dtype=np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    tf_out = np.einsum("niyxab,abio->noyx", windows, w)
    torch_out = F.conv2d(torch.from_numpy(x), nvidia_layouts.conv_weight_from_tf(w), padding=1)
    np.testing.assert_allclose(torch_out.numpy(), tf_out, rtol=1e-5, atol=1e-5)

    v, d = rng.standard_normal((2, 5), dtype=np.float32), rng.standard_normal((5, 7), dtype=np.float32)
    np.testing.assert_allclose(F.linear(torch.from_numpy(v), nvidia_layouts.dense_weight_from_tf(d)).numpy(),
                               v @ d, rtol=1e-5, atol=1e-5)


def test_unknown_synthesis_variables_are_an_error():
    source = G_synthesis(resolution=8, fmap_base=64, fmap_max=16)
    variables = dict(tf_synthesis_variables(source))
    variables["4x4/Dense/weight"] = np.zeros((512, 256), np.float32)  # a dense input layer instead of Const
    with pytest.raises(weights.WeightsError, match="unexpected variables.*4x4/Dense/weight"):
        nvidia_layouts.convert_synthesis(variables)
    del variables["4x4/Dense/weight"], variables["8x8/Conv1/weight"]
    with pytest.raises(weights.WeightsError, match="not a StyleGAN-1 synthesis network this port can run"):
        families.build("stylegan1", "synthesis", nvidia_layouts.convert_synthesis(variables), {}, "the test")


# --- the command line, and refusing bad files -------------------------------------------------

@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, mapping):
    """Runs the CLI on every case at once: each run mostly waits for torch to import."""
    folder = tmp_path_factory.mktemp("cli")
    marker = folder / "MARKER"
    evil = Network("Gs", [("lod", Payload(os.system, f"touch {marker}"))])
    gs = Network("Gs", [("dlatent_avg", np.zeros(512, np.float32))])
    valid = dumps(nvidia_tuple(randomised(G_synthesis(resolution=8, fmap_base=64, fmap_max=16), seed=8), mapping))
    truncated = dumps((gs, gs, gs))
    files = {"valid": valid, "malicious": dumps((evil, evil, evil)), "truncated": truncated[: len(truncated) // 2]}
    processes = {}
    for case, data in files.items():
        (folder / f"{case}.pkl").write_bytes(data)
        processes[case] = subprocess.Popen(
            [sys.executable, "tests/patched_script.py", json.dumps({"fit_draws": QUICK_FIT_DRAWS}), "convert_weights.py",
             str(folder / f"{case}.pkl"), "-cache_dir", str(folder / case)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = {}
    for case, process in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        runs[case] = types.SimpleNamespace(returncode=process.returncode, stdout=stdout, stderr=stderr,
                                           cache=folder / case, marker=marker)
    return runs


def test_cli_converts_and_warns_about_an_unknown_file(cli_runs):
    run = cli_runs["valid"]
    assert run.returncode == 0, run.stderr
    assert run.stderr.startswith("warning: ") and "not one of NVIDIA's released" in run.stderr
    assert "8x8 generator" in run.stderr and run.stdout == ""
    assert {p.name for p in run.cache.iterdir()} == {"synthesis.pt", "mapping.pt", "gaussian_fit.pt", weights.RECORD}


def test_cli_refuses_a_malicious_pickle_without_running_it(cli_runs):
    run = cli_runs["malicious"]
    assert run.returncode == 3
    warning, error = run.stderr.strip().splitlines()  # unknown MD5, then the refusal; no traceback
    assert warning.startswith("warning: ")
    assert error.startswith("error: refusing to load ") and "system from the pickle" in error
    assert not run.marker.exists() and not run.cache.exists()


def test_cli_reports_a_truncated_file_in_one_line(cli_runs):
    run = cli_runs["truncated"]
    assert run.returncode == 3
    warning, error = run.stderr.strip().splitlines()
    assert error.startswith("error: ") and "could not be read as a pickle (truncated or damaged?)" in error
    assert not run.cache.exists()


def test_exec_payload_is_refused(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    pkl = dump([Payload(exec, f"open({str(marker)!r}, 'w').close()")], tmp_path / "evil.pkl")
    assert convert_weights.main([str(pkl), "-cache_dir", str(tmp_path / "cache")]) == 3
    assert "error: refusing to load builtins.exec from the pickle" in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [
    ([1, 2, 3], "not a StyleGAN-1 network pickle: expected NVIDIA's (G, D, Gs) tuple of networks, found a list"),
    ({"G": Network("G", []), "D": Network("D", [])}, "found a dict of length 2"),
    ((Network("G", []), Network("D", []), Network("Gs", [])), "Gs in the pickle has no 'synthesis' network"),
    (Network("Gs", [], components={"synthesis": Network("G_synthesis", [("x", "text")])}), "non-float variables: x"),
])
def test_pickle_of_the_wrong_kind_gives_a_clear_error(tmp_path, capsys, content, message):
    pkl = dump(content, tmp_path / "wrong.pkl")
    assert convert_weights.main([str(pkl), "-cache_dir", str(tmp_path / "cache")]) == 3
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and message in error
    assert not (tmp_path / "cache").exists()


def test_missing_file_gives_a_clear_error(tmp_path, capsys):
    assert convert_weights.main([str(tmp_path / "nothing.pkl")]) == 3
    assert capsys.readouterr().err.startswith("error: ")
