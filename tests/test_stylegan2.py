"""StyleGAN2: NVIDIA's stylegan2-ada-pytorch pickles read safely, the generator, and PULSE on it.

The shared reference (a pickle made by NVIDIA's code, and what that code computed from it) is
used when ../shared is there. The fresh-clone tests build their own small pickles, in NVIDIA's
format, with tests/stylegan2_pickles.py. What every family keeps (batches, the fast path, the
gaussian fit) is tested once for all in tests/test_families.py.
"""
import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from weightfiles import nvidia_pickles, weights
import convert_weights
import run
from generators import stylegan2
from conftest import QUICK_FIT_DRAWS, ROOT, TINY_MODEL, Payload, convert_quickly, relative_error
from family_checks import (DRAWS, assert_gaussian_fit_reproduced, assert_refused, convert_bytes, noise_for,
                           run_search, search_inputs)
from runkit.files import file_md5
from stylegan2_pickles import nvidia_pickle, random_stylegan2

SHARED = ROOT.parent / "shared" / "reference" / "stylegan2"
needs_shared = pytest.mark.skipif(not (SHARED / "network-snapshot-64.pkl").is_file(),
                                  reason="../shared/reference/stylegan2 is not here")

# ---- the generator itself ------------------------------------------------------------------

def test_shapes_follow_nvidia_layer_counts():
    synthesis, _ = random_stylegan2(resolution=64)
    assert synthesis.num_ws == 10 and synthesis.noise_sizes == [4, 8, 8, 16, 16, 32, 32, 64, 64]
    assert synthesis.default_bad_noise_layers == {8}
    names = set(synthesis.state_dict())
    assert {"b4.const", "b4.conv1.affine.weight", "b8.conv0.noise_const", "b8.conv0.noise_strength",
            "b64.torgb.weight", "b64.resample_filter"} <= names


@pytest.mark.parametrize("architecture", ["skip", "resnet", "orig"])
def test_architecture_is_read_back_from_the_state_dict(architecture):
    synthesis, _ = random_stylegan2(architecture=architecture)
    state = synthesis.state_dict()
    rebuilt = stylegan2.synthesis_from_state_dict(state)
    rebuilt.load_state_dict(state, strict=True)
    ws = torch.randn(2, synthesis.num_ws, 512)
    assert torch.equal(rebuilt(ws, noise_for(synthesis)), synthesis(ws, noise_for(synthesis)))


def test_conv_clamp_limits_every_layer_output():
    free, _ = random_stylegan2()
    clamped, _ = random_stylegan2(conv_clamp=0.05)
    ws = torch.randn(2, free.num_ws, 512)
    assert not torch.equal(free(ws, noise_for(free)), clamped(ws, noise_for(clamped)))
    assert clamped.b16.torgb(torch.randn(2, 16, 16, 16) * 100, ws[:, 0]).abs().max() <= 0.05


def test_float64_agrees_with_float32():
    synthesis, mapping = random_stylegan2(conv_clamp=0.5)
    ws = torch.randn(2, synthesis.num_ws, 512)
    out32 = synthesis(ws, noise_for(synthesis))
    out64 = synthesis.double()(ws.double(), [n.double() for n in noise_for(synthesis)])
    assert out64.dtype == torch.float64 and relative_error(out32, out64) < 1e-5
    assert mapping.double()(torch.randn(3, 512, dtype=torch.float64)).dtype == torch.float64


# ---- NVIDIA's own reference ------------------------------------------------------------------

def load_both(cache):
    """(synthesis, mapping) of a converted cache folder."""
    return weights.load_network(cache, "synthesis"), weights.load_network(cache, "mapping")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("sg2-shared")
    convert_quickly(SHARED / "network-snapshot-64.pkl", cache)
    return cache


@pytest.fixture(scope="module")
def reference():
    return torch.load(SHARED / "reference-64.pt", map_location="cpu", weights_only=True)


@needs_shared
def test_shared_pickle_converts_to_the_described_shape(shared_cache):
    info = json.loads((SHARED / "info-64.json").read_text())
    synthesis, prior = weights.load_generator(shared_cache)
    fit = prior.fit
    assert isinstance(synthesis, stylegan2.SynthesisNetwork)
    assert synthesis.resolution == info["resolution"] and synthesis.num_ws == info["num_ws"]
    assert synthesis.noise_sizes == info["noise_layers"]
    _, mapping = load_both(shared_cache)
    params = sum(t.numel() for m in (synthesis, mapping) for t in m.parameters())
    assert params == info["params"]
    assert set(fit) == {"mean", "std"}


@needs_shared
@pytest.mark.parametrize("image", ["img_noise", "img_const", "img_none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_matches_nvidia(shared_cache, reference, image, dtype):
    synthesis, _ = load_both(shared_cache)
    synthesis = synthesis.to(dtype)
    noise = {"img_noise": reference["noise"], "img_const": synthesis.noise_const(),
             "img_none": [torch.zeros(1, 1, r, r) for r in synthesis.noise_sizes]}[image]
    strengths = [layer.noise_strength.item() for b in synthesis.blocks for layer in b.layers]
    assert strengths == pytest.approx(reference["noise_strength"], rel=1e-6)
    with torch.no_grad():
        out = synthesis(reference["ws"].to(dtype), [None if n is None else n.to(dtype) for n in noise])
    assert out.dtype == dtype and relative_error(out, reference[image]) < 1e-5
    if image == "img_none":  # zero maps, as PULSE passes them, are NVIDIA's noise_mode='none'
        with torch.no_grad():
            assert torch.equal(synthesis(reference["ws"].to(dtype)), out)


@needs_shared
def test_mapping_matches_nvidia(shared_cache, reference):
    _, mapping = load_both(shared_cache)
    with torch.no_grad():
        w = mapping(reference["z"])
    assert relative_error(w[:, None].expand_as(reference["w"]), reference["w"]) < 1e-5


@needs_shared
@pytest.mark.parametrize("draws", DRAWS)
def test_gaussian_fit_reproduces_the_shared_one(shared_cache, draws):
    assert_gaussian_fit_reproduced(load_both(shared_cache)[1], SHARED / "gaussian_fit.pt", draws)


@needs_shared
def test_shared_pickle_runs_none_of_its_source(tmp_path):
    """Its module_src would define NVIDIA's classes; the reader must not even look at it."""
    data = nvidia_pickles.read(SHARED / "network-snapshot-64.pkl")
    assert nvidia_pickles.is_stylegan2_pickle(data) and data["G_ema"].class_name == "Generator"
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules


# ---- fresh clone: own pickles in NVIDIA's format -------------------------------------------

@pytest.mark.parametrize("architecture, conv_clamp, protocol", [
    ("skip", None, 4), ("resnet", 0.5, 4), ("orig", 256.0, 3), ("skip", 0.5, 3)])
def test_own_pickle_round_trips_exactly(tmp_path, architecture, conv_clamp, protocol):
    marker = tmp_path / "MODULE_SRC_RAN"
    synthesis, mapping = random_stylegan2(architecture=architecture, conv_clamp=conv_clamp)
    data = nvidia_pickle(synthesis, mapping, module_src=f"open({str(marker)!r}, 'w').close()", protocol=protocol)
    cache = convert_bytes(tmp_path, data)
    assert not marker.exists()
    assert {p.name for p in cache.iterdir()} == {"synthesis.pt", "mapping.pt", "gaussian_fit.pt", weights.RECORD}
    record = weights.read_record(cache)
    assert record["family"] == "stylegan2" and record["md5"] == file_md5(tmp_path / "net.pkl")
    assert record["attributes"] == {"conv_clamp": conv_clamp, "mapping_lr_multiplier": 0.01}

    got, prior = weights.load_generator(cache)
    fit = prior.fit
    _, got_mapping = load_both(cache)
    ws = torch.randn(2, synthesis.num_ws, 512)
    assert torch.equal(got(ws, noise_for(synthesis)), synthesis(ws, noise_for(synthesis)))
    z = torch.randn(5, 512)
    assert torch.equal(got_mapping(z), mapping(z))
    want_fit = weights.fit_gaussian(mapping, draws=QUICK_FIT_DRAWS)
    assert all(torch.equal(fit[k], want_fit[k]) for k in ("mean", "std"))


def test_stylegan2_cache_never_uses_the_bundled_stylegan1_fit(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "GAUSSIAN_FIT_DRAWS", QUICK_FIT_DRAWS)
    cache = convert_bytes(tmp_path, nvidia_pickle(*random_stylegan2()))
    (cache / "gaussian_fit.pt").unlink()
    fit = weights.load_generator(cache)[1].fit
    _, mapping = load_both(cache)
    assert torch.equal(fit["mean"], weights.fit_gaussian(mapping, draws=QUICK_FIT_DRAWS)["mean"])  # its own mapping
    assert (cache / "gaussian_fit.pt").is_file()


def test_families_do_not_mix_in_one_cache(tmp_path, tiny_pickle):
    files_2020 = tmp_path / "2020"
    files_2020.mkdir()
    shutil.copy(TINY_MODEL / "synthesis.pt", files_2020)
    with pytest.raises(weights.WeightsError, match="already holds a StyleGAN-1 generator"):
        convert_bytes(tmp_path, nvidia_pickle(*random_stylegan2()), cache=files_2020)
    assert [p.name for p in files_2020.iterdir()] == ["synthesis.pt"]  # the user's 2020 file is untouched
    cache = convert_bytes(tmp_path, nvidia_pickle(*random_stylegan2()))
    with pytest.raises(weights.WeightsError, match="already holds a StyleGAN2 generator"):
        convert_bytes(tmp_path, tiny_pickle, name="sg1", cache=cache)


def test_conditional_generators_are_refused(tmp_path):
    with pytest.raises(weights.WeightsError, match="conditional"):
        convert_bytes(tmp_path, nvidia_pickle(*random_stylegan2(), extra_state=dict(c_dim=10)))


@pytest.mark.parametrize("payload", ["os.system", "eval"])
def test_payload_in_a_persistent_object_is_refused_and_never_runs(tmp_path, capsys, payload):
    marker = tmp_path / "PAYLOAD_RAN"
    if payload == "os.system":
        evil = Payload(os.system, f"touch {marker}")
    else:
        evil = Payload(eval, f"open({str(marker)!r}, 'w').close()")
    data = nvidia_pickle(*random_stylegan2(), extra_state=dict(num_ws=evil))
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    assert convert_weights.main([str(path), "-cache_dir", str(tmp_path / "cache")]) == 3  # setup failed
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: refusing to load ") and ("system" in error or "builtins.eval" in error)
    assert not marker.exists() and not (tmp_path / "cache").exists()


def test_unknown_torch_global_is_refused(tmp_path):
    data = nvidia_pickle(*random_stylegan2(), extra_state=dict(extra=torch.float16))
    (tmp_path / "net.pkl").write_bytes(data)
    with pytest.raises(weights.WeightsError, match="refusing to load torch.float16"):
        nvidia_pickles.read(tmp_path / "net.pkl")


# ---- PULSE on a StyleGAN2 --------------------------------------------------------------------

FIXTURE_RESOLUTION = 32


@pytest.fixture(scope="module")
def sg2_run_setup(tmp_path_factory):
    """A 32x32 StyleGAN2 cache (seeded random init) and, as input, one of its own images at 8x8."""
    folder = tmp_path_factory.mktemp("sg2-run")
    synthesis, mapping = random_stylegan2(resolution=FIXTURE_RESOLUTION, channels=16, seed=3)
    cache = convert_bytes(folder, nvidia_pickle(synthesis, mapping))
    return cache, search_inputs(cache, folder / "in")


@pytest.mark.parametrize("precision", ["fp64", "fp32"])
def test_search_brings_l2_down_on_a_stylegan2(tmp_path, sg2_run_setup, precision):
    records, out_dir = run_search(tmp_path, sg2_run_setup, "out", "-seed", "0", "-steps", "40",
                                  "-precision", precision)
    for record in records:
        l2 = [t["L2"] for t in record["trajectory"]]
        assert record["converged"] or min(l2) <= l2[0] / 10, l2
    image = np.asarray(Image.open(out_dir / "face0.png"))
    assert image.shape == (FIXTURE_RESOLUTION, FIXTURE_RESOLUTION, 3)


def test_noise_layers_beyond_a_stylegan2_are_refused(tmp_path, sg2_run_setup, capsys):
    assert_refused(tmp_path, sg2_run_setup, capsys, [
        ("-bad_noise_layers", "3.9", "noise layers are 0..6, not 9"),
        ("-bad_noise_layers", "17", "noise layers are 0..6, not 17"),  # 2020's, said aloud
        ("-num_trainable_noise_layers", "8", "has 7 layers with noise")])


def test_network_flag_converts_a_stylegan2_pickle_once_and_takes_its_folder(tmp_path, sg2_run_setup, monkeypatch):
    monkeypatch.setattr(weights, "GAUSSIAN_FIT_DRAWS", QUICK_FIT_DRAWS)
    pkl = tmp_path / "sg2-net.pkl"
    pkl.write_bytes(nvidia_pickle(*random_stylegan2(resolution=FIXTURE_RESOLUTION, seed=4)))
    _, inputs = sg2_run_setup
    folder = tmp_path / "cache" / "sg2-net"
    stamps = []
    for out, network in [("first", pkl), ("again", pkl), ("folder", folder)]:
        assert run.main(["-input_dir", str(inputs), "-output_dir", str(tmp_path / out), "-cache_dir",
                         str(tmp_path / "cache"), "-network", str(network), "-seed", "0", "-steps", "2"]) == 0
        stamps.append((folder / weights.RECORD).stat().st_mtime_ns)
    assert weights.folder_family(folder) == "stylegan2" and len(set(stamps)) == 1  # converted once
