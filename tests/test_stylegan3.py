"""StyleGAN3: NVIDIA's stylegan3 pickles read safely, the generator (configs T and R), PULSE on it.

Config T is checked against ../shared/reference/stylegan3 (a pickle made by NVIDIA's code and what
that code computed from it) when it is there. Config R has no reference made by NVIDIA's code: its
tests build R networks with tests/stylegan3_networks.py (NVIDIA's layout, this project's code) and
check what can be checked without NVIDIA's numbers. What every family keeps (batches, the fast
path, the gaussian fit) is tested once for all in tests/test_families.py.
"""
import json
import math
import os
import sys

import numpy as np
import pytest
import scipy.special
import torch

from weightfiles import nvidia_pickles, weights
import convert_weights
import PULSE
import run
from conftest import QUICK_FIT_DRAWS, ROOT, Payload, quick_fits, relative_error
from family_checks import (DRAWS, assert_gaussian_fit_reproduced, assert_refused, convert_bytes, networks_of_file,
                           run_search, search_inputs)
from stylegan3_networks import SMALL, design, lowpass_filter, random_stylegan3, stylegan3_pickle

SHARED = ROOT.parent / "shared" / "reference" / "stylegan3"
PICKLE = SHARED / "stylegan3-t-tiny-64x64.pkl"
needs_shared = pytest.mark.skipif(not PICKLE.is_file(), reason="../shared/reference/stylegan3 is not here")


# ---- NVIDIA's own reference (config T) -------------------------------------------------------

@pytest.fixture(scope="module")
def shared_networks():
    return networks_of_file(PICKLE, "stylegan3")


@pytest.fixture(scope="module")
def reference():
    return torch.load(SHARED / "reference-stylegan3-t-tiny-64x64.pt", map_location="cpu", weights_only=True)


@needs_shared
def test_shared_pickle_has_the_described_shape(shared_networks):
    info = json.loads((SHARED / "info-stylegan3-t-tiny-64x64.json").read_text())
    synthesis, mapping = shared_networks
    assert (synthesis.resolution, synthesis.num_ws, synthesis.dlatent_size) == (info["resolution"], info["num_ws"], 512)
    assert synthesis.noise_sizes == [] and synthesis.default_bad_noise_layers == frozenset()
    assert sum(t.numel() for m in shared_networks for t in m.parameters()) == info["params"]


@needs_shared
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fast", [False, True])
def test_forward_matches_nvidia(shared_networks, reference, dtype, fast):
    synthesis = shared_networks[0].to(dtype).set_fast(fast)
    with torch.no_grad():
        image = synthesis(reference["ws"].to(dtype), [])
    synthesis.set_fast(False).float()
    assert image.dtype == dtype and relative_error(image, reference["img"]) < 1e-5


@needs_shared
def test_mapping_matches_nvidia(shared_networks, reference):
    with torch.no_grad():
        w = shared_networks[1](reference["z"])
    assert relative_error(w[:, None].expand_as(reference["w"]), reference["w"]) < 1e-5


@needs_shared
@pytest.mark.parametrize("draws", DRAWS)
def test_gaussian_fit_reproduces_the_shared_one(shared_networks, draws):
    assert_gaussian_fit_reproduced(shared_networks[1], SHARED / "gaussian_fit-stylegan3-t-tiny-64x64.pt", draws)


@needs_shared
def test_design_reproduces_nvidias_layers():
    """tests/stylegan3_networks.py lays a network out as NVIDIA's code did for the shared pickle:
    same layers, resampling, padding and filters (what the config R tests rely on)."""
    synthesis_state = nvidia_pickles.submodule(nvidia_pickles.read(PICKLE)["G_ema"], "synthesis").state
    features, layers = design(img_resolution=64, channel_base=1024, channel_max=32)
    assert [layer["name"] for layer in layers] == synthesis_state["layer_names"]
    stored_input = synthesis_state["_modules"]["input"].state
    assert list(stored_input["size"]) == list(features["size"])
    assert stored_input["sampling_rate"] == features["sampling_rate"] and stored_input["bandwidth"] == features["bandwidth"]
    for layer in layers:
        stored = synthesis_state["_modules"][layer["name"]].state
        for key in ("is_torgb", "is_critically_sampled", "in_channels", "out_channels", "conv_kernel",
                    "in_sampling_rate", "out_sampling_rate", "tmp_sampling_rate", "up_factor", "down_factor",
                    "up_taps", "down_taps", "down_radial", "padding"):
            assert stored[key] == layer[key], (layer["name"], key)
        for key in ("in_cutoff", "out_cutoff", "in_half_width", "out_half_width"):
            assert stored[key] == pytest.approx(layer[key], rel=1e-12), (layer["name"], key)
        for key in ("up_filter", "down_filter"):
            want = stored["_buffers"][key]
            assert (want is None) == (layer[key] is None)
            if want is not None:
                assert torch.allclose(layer[key], want, rtol=0, atol=1e-7), (layer["name"], key)


@needs_shared
def test_shared_pickle_runs_none_of_its_source():
    data = nvidia_pickles.read(PICKLE)
    assert nvidia_pickles.is_stylegan3_pickle(data) and not nvidia_pickles.is_stylegan2_pickle(data)
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules


# ---- own networks: config T and config R -----------------------------------------------------

def test_config_r_is_laid_out_as_nvidia_describes():
    synthesis, _ = random_stylegan3("r")
    layers = [getattr(synthesis, name) for name in synthesis.layer_names]
    assert synthesis.num_ws == 16 and synthesis.resolution == 64 and synthesis.noise_sizes == []
    assert all(layer.weight.shape[-2:] == (1, 1) for layer in layers)
    assert synthesis.input.weight.shape[0] == 64  # twice config T's channels
    for layer in layers[:-3]:  # not critically sampled: radial downsampling filters
        assert layer.down_filter.ndim == 2 and layer.up_filter.ndim == 1
    for layer in layers[-3:-1]:
        assert layer.down_filter.ndim == 1
    assert layers[-1].up_filter is None and layers[-1].down_filter is None


def test_radial_filter_is_the_windowed_jinc():
    """Sums to 1, radially symmetric, and each tap is J1(2 pi fc r) / (pi r) times the Kaiser
    window at its row and column (up to the normalisation)."""
    taps, cutoff, width, rate = 12, 5.0, 14.0, 64
    f = lowpass_filter(taps, cutoff, width, rate, radial=True).double()
    assert f.shape == (taps, taps) and f.sum().item() == pytest.approx(1, abs=1e-6)
    assert torch.allclose(f, f.t()) and torch.allclose(f, f.flip(0)) and torch.allclose(f, f.flip(1))
    atten = 2.285 * (taps - 1) * math.pi * width / (rate / 2) + 7.95  # Kaiser's formula for the window
    beta = 0.1102 * (atten - 8.7) if atten > 50 else 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    window = np.kaiser(taps, beta)
    unnormalised = np.empty((taps, taps))
    for i in range(taps):
        for j in range(taps):
            r = math.hypot(i - (taps - 1) / 2, j - (taps - 1) / 2) / rate
            unnormalised[i, j] = scipy.special.j1(2 * math.pi * cutoff * r) / (math.pi * r) * window[i] * window[j]
    assert np.allclose(f.numpy(), unnormalised / unnormalised.sum(), rtol=1e-5, atol=1e-8)
    # A low-pass filter: its response at DC is 1, well beyond the cutoff it is small.
    response = torch.fft.fft2(f, s=(256, 256)).abs()
    beyond = int(256 * (cutoff + width) / rate)
    assert response[0, 0].item() == pytest.approx(1) and response[beyond, 0].item() < 0.05


@pytest.mark.parametrize("config", ["t", "r"])
def test_float64_agrees_with_float32_and_batches_are_independent(config):
    synthesis, _ = random_stylegan3(config)
    ws = torch.randn(3, synthesis.num_ws, 512)
    out32 = synthesis(ws, [])
    out64 = synthesis.double()(ws.double(), [])
    assert out32.shape == (3, 3, 64, 64) and torch.isfinite(out32).all() and out32.abs().max() > 0
    assert relative_error(out32, out64) < 1e-5
    alone = torch.cat([synthesis(ws[i:i + 1].double(), []) for i in range(3)])
    assert relative_error(alone, out64) < 1e-13  # no batch-wide statistic; rounding of batched convolutions only


def test_noise_maps_are_refused():
    synthesis, _ = random_stylegan3("t")
    with pytest.raises(ValueError, match="no noise"):
        synthesis(torch.randn(1, synthesis.num_ws, 512), [torch.zeros(1, 1, 4, 4)])


@pytest.mark.parametrize("config", ["t", "r"])
def test_own_pickle_round_trips_exactly_and_runs_none_of_its_source(tmp_path, config):
    marker = tmp_path / "MODULE_SRC_RAN"
    synthesis, mapping = random_stylegan3(config, seed=1)
    path = tmp_path / "net.pkl"
    path.write_bytes(stylegan3_pickle(synthesis, mapping, module_src=f"open({str(marker)!r}, 'w').close()"))
    got, got_mapping = networks_of_file(path, "stylegan3")
    assert not marker.exists()
    ws = torch.randn(2, synthesis.num_ws, 512)
    assert torch.equal(got(ws, []), synthesis(ws, []))
    z = torch.randn(5, 512)
    assert torch.equal(got_mapping(z), mapping(z))


@pytest.mark.parametrize("payload", ["os.system", "eval"])
def test_payload_in_a_stylegan3_pickle_is_refused_and_never_runs(tmp_path, payload):
    marker = tmp_path / "PAYLOAD_RAN"
    evil = Payload(os.system, f"touch {marker}") if payload == "os.system" else \
        Payload(eval, f"open({str(marker)!r}, 'w').close()")
    path = tmp_path / "evil.pkl"
    path.write_bytes(stylegan3_pickle(*random_stylegan3("t"), extra_state=dict(num_ws=evil)))
    with pytest.raises(weights.WeightsError, match="refusing to load (posix|nt|os).system|refusing to load builtins.eval"):
        nvidia_pickles.read(path)
    assert not marker.exists()


# ---- the cache folder, run.py and PULSE --------------------------------------------------------

@needs_shared
def test_shared_pickle_converts_into_a_cache_that_loads_the_same_generator(tmp_path, shared_networks, reference):
    cache = tmp_path / "cache"
    with quick_fits():
        assert convert_weights.main([str(PICKLE), "-cache_dir", str(cache)]) == 0
    assert {p.name for p in cache.iterdir()} == {"synthesis.pt", "mapping.pt", "gaussian_fit.pt", weights.RECORD}
    assert weights.read_record(cache)["family"] == "stylegan3"
    synthesis, prior = weights.load_generator(cache)
    fit = prior.fit
    with torch.no_grad():
        image = synthesis(reference["ws"], [])
        assert torch.equal(image, shared_networks[0](reference["ws"], []))
    assert relative_error(image, reference["img"]) < 1e-5
    assert torch.equal(fit["std"], weights.fit_gaussian(shared_networks[1], draws=QUICK_FIT_DRAWS)["std"])


@pytest.fixture(scope="module", params=["t", "r"])
def sg3_run_setup(request, tmp_path_factory):
    """A 16x16 StyleGAN3 cache of the config and, as input, one of its own images at 8x8."""
    folder = tmp_path_factory.mktemp(f"sg3-{request.param}-run")
    cache = convert_bytes(folder, stylegan3_pickle(*random_stylegan3(request.param, seed=3, **SMALL)))
    return cache, search_inputs(cache, folder / "in")


def test_search_brings_l2_down_on_a_stylegan3(tmp_path, sg3_run_setup):
    # A tiny random StyleGAN3's images vary little: an eps far below the 2020 one keeps L2 unclamped.
    records, _ = run_search(tmp_path, sg3_run_setup, "out", "-seed", "0", "-steps", "30", "-precision", "fp64",
                         "-eps", "1e-12")
    for record in records:
        l2 = [t["L2"] for t in record["trajectory"]]
        assert min(l2) <= l2[0] / 4, l2


def test_noise_flags_do_nothing_by_default_and_naming_a_layer_is_refused(tmp_path, sg3_run_setup, capsys):
    default, _ = run_search(tmp_path, sg3_run_setup, "default", "-seed", "1", "-steps", "2")
    for noise_type in ("zero", "fixed"):  # nothing to draw or hold: the same search as the default
        records, _ = run_search(tmp_path, sg3_run_setup, noise_type, "-seed", "1", "-steps", "2",
                                "-noise_type", noise_type)
        assert [r["trajectory"] for r in records] == [r["trajectory"] for r in default]
    assert_refused(tmp_path, sg3_run_setup, capsys, [("-bad_noise_layers", "0", "this model's noise layers are none, not 0"),
                                                     ("-num_trainable_noise_layers", "1", "has 0 layers with noise")])


def test_network_flag_converts_a_stylegan3_pickle(tmp_path, sg3_run_setup, monkeypatch):
    monkeypatch.setattr(weights, "GAUSSIAN_FIT_DRAWS", QUICK_FIT_DRAWS)
    pkl = tmp_path / "sg3-net.pkl"
    pkl.write_bytes(stylegan3_pickle(*random_stylegan3("t", seed=4, **SMALL)))
    _, inputs = sg3_run_setup
    assert run.main(["-input_dir", str(inputs), "-output_dir", str(tmp_path / "out"), "-cache_dir",
                     str(tmp_path / "cache"), "-network", str(pkl), "-seed", "0", "-steps", "2"]) == 0
    assert weights.folder_family(tmp_path / "cache" / "sg3-net") == "stylegan3"


def test_python_api_loads_a_stylegan3_like_any_network(tmp_path, sg3_run_setup):
    cache, inputs = sg3_run_setup
    model = PULSE.load(network=str(cache), device="cpu")
    (result,) = model.upsample(inputs / "face0.png", seed=0, steps=2)
    assert result.noise == [] and model.render(result.latent, result.noise).size == (16, 16)
