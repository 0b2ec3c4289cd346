"""rosinality/stylegan2-pytorch checkpoints: read safely (both layouts), the generator, PULSE on it.

The shared reference (checkpoints made by rosinality's code and what it computed from them) is
used when ../shared is there; the other tests save their own small checkpoints (tests/network_files.py).
What every family keeps (batches, the fast path, the gaussian fit) is tested once for all in
tests/test_families.py.
"""
import argparse
import json
import os

import pytest
import torch

from weightfiles import rosinality_checkpoints, torch_files, weights
import convert_weights
import PULSE
import run
from conftest import QUICK_FIT_DRAWS, ROOT, Payload, convert_quickly, quick_fits, relative_error
from family_checks import DRAWS, assert_gaussian_fit_reproduced, assert_refused, networks_of_file, search_inputs
from network_files import random_rosinality, training_checkpoint
from stylegan2_pickles import nvidia_pickle, random_stylegan2

SHARED = ROOT.parent / "shared" / "reference" / "rosinality"
needs_shared = pytest.mark.skipif(not (SHARED / "rosinality-64.pt").is_file(),
                                  reason="../shared/reference/rosinality is not here")


# ---- rosinality's own reference ---------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_networks():
    return networks_of_file(SHARED / "rosinality-64.pt", "rosinality")


@pytest.fixture(scope="module")
def reference():
    return torch.load(SHARED / "reference-rosinality-64.pt", map_location="cpu", weights_only=True)


@needs_shared
def test_shared_checkpoint_has_the_described_shape(shared_networks):
    info = json.loads((SHARED / "info-rosinality-64.json").read_text())
    synthesis, mapping = shared_networks
    assert synthesis.resolution == info["size"] and synthesis.num_ws == info["n_latent"]
    assert synthesis.noise_sizes == [size for size, _ in info["noise_layers"]]
    assert synthesis.default_bad_noise_layers == {len(synthesis.noise_sizes) - 1}
    assert sum(t.numel() for m in shared_networks for t in m.parameters()) == info["params"]


@needs_shared
@pytest.mark.parametrize("image", ["img_noise", "img_const"])
@pytest.mark.parametrize("dtype, fast", [(torch.float32, False), (torch.float32, True), (torch.float64, False)])
def test_forward_matches_rosinality(shared_networks, reference, image, dtype, fast):
    synthesis = shared_networks[0].to(dtype).set_fast(fast)
    noise = reference["noise"] if image == "img_noise" else synthesis.noise_const()
    with torch.no_grad():
        out = synthesis(reference["ws"].to(dtype), [n.to(dtype) for n in noise])
    synthesis.set_fast(False).float()
    assert out.dtype == dtype and relative_error(out, reference[image]) < 1e-5


@needs_shared
def test_mapping_matches_rosinality(shared_networks, reference):
    with torch.no_grad():
        assert relative_error(shared_networks[1](reference["z"]), reference["w"]) < 1e-5


@needs_shared
def test_converted_layout_holds_the_same_generator():
    training, converted = (read_g_ema(SHARED / name) for name in ("rosinality-64.pt", "rosinality-64-converted.pt"))
    assert training.keys() == converted.keys() and all(torch.equal(training[k], converted[k]) for k in training)


@needs_shared
@pytest.mark.parametrize("draws", DRAWS)
def test_gaussian_fit_reproduces_the_shared_one(shared_networks, draws):
    assert_gaussian_fit_reproduced(shared_networks[1], SHARED / "gaussian_fit-rosinality-64.pt", draws)


# ---- own checkpoints -----------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["training", "converted"])
def test_own_checkpoint_round_trips_exactly(tmp_path, layout):
    g_ema = random_rosinality()
    data = training_checkpoint(g_ema) if layout == "training" else {"g_ema": g_ema, "latent_avg": torch.zeros(512)}
    torch.save(data, tmp_path / "net.pt")
    synthesis, mapping = networks_of_file(tmp_path / "net.pt", "rosinality")
    assert synthesis.resolution == 32 and synthesis.noise_sizes == [4, 8, 8, 16, 16, 32, 32]
    assert {**mapping.state_dict(), **synthesis.state_dict()}.keys() == g_ema.keys()
    ws = torch.randn(2, synthesis.num_ws, 512)
    noise = [torch.randn(2, 1, r, r) for r in synthesis.noise_sizes]
    assert torch.isfinite(synthesis(ws, noise)).all()
    assert not torch.equal(synthesis(ws, noise), synthesis(ws, synthesis.noise_const()))


def test_float64_agrees_with_float32(tmp_path):
    torch.save(training_checkpoint(random_rosinality()), tmp_path / "net.pt")
    synthesis, _ = networks_of_file(tmp_path / "net.pt", "rosinality")
    ws = torch.randn(2, synthesis.num_ws, 512)
    noise = [torch.randn(2, 1, r, r) for r in synthesis.noise_sizes]
    out = synthesis(ws, noise)
    out64 = synthesis.double()(ws.double(), [n.double() for n in noise])
    assert relative_error(out, out64) < 1e-5


def read_g_ema(path):
    """The g_ema state dict the conversion takes from the checkpoint at `path`; WeightsError as it refuses."""
    return rosinality_checkpoints.g_ema_of(torch_files.read(path).data, path)


class MarkerWriter:
    """Unpickling it would write the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("payload", ["os.system", "open", "namespace"])
def test_args_carrying_a_payload_are_refused_and_never_run(tmp_path, payload):
    marker = tmp_path / "PAYLOAD_RAN"
    evil = {"os.system": lambda: Payload(os.system, f"touch {marker}"),
            "open": lambda: MarkerWriter(marker),
            "namespace": lambda: argparse.Namespace(size=32, hook=Payload(os.system, f"touch {marker}"))}[payload]()
    torch.save(training_checkpoint(random_rosinality(), args=evil), tmp_path / "evil.pt")
    with pytest.raises(weights.WeightsError, match="not a PyTorch file this port reads safely"):
        read_g_ema(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize("args", [argparse.Namespace(size=torch.zeros(3)), argparse.Namespace(dtype=torch.float16),
                                  {"size": 32}])
def test_args_that_weights_only_takes_but_are_not_plain_flags_are_refused(tmp_path, args):
    torch.save(training_checkpoint(random_rosinality(), args=args), tmp_path / "odd.pt")
    with pytest.raises(weights.WeightsError, match="'args' is not a Namespace of plain values"):
        read_g_ema(tmp_path / "odd.pt")


def test_other_layouts_are_refused(tmp_path):
    torch.save({"g_ema": random_rosinality(), "extra": 1}, tmp_path / "other.pt")
    with pytest.raises(weights.WeightsError, match="not a rosinality/stylegan2-pytorch checkpoint"):
        read_g_ema(tmp_path / "other.pt")


# ---- the cache folder, run.py and PULSE --------------------------------------------------------

@needs_shared
@pytest.mark.parametrize("name", ["rosinality-64.pt", "rosinality-64-converted.pt"])
def test_shared_checkpoint_converts_into_a_cache_that_loads_the_same_generator(tmp_path, name, reference):
    cache = tmp_path / "cache"
    with quick_fits():
        assert convert_weights.main([str(SHARED / name), "-cache_dir", str(cache)]) == 0
    assert {p.name for p in cache.iterdir()} == {"synthesis.pt", "mapping.pt", "gaussian_fit.pt", weights.RECORD}
    assert weights.read_record(cache)["family"] == "rosinality"
    synthesis, _ = weights.load_generator(cache)
    with torch.no_grad():
        image = synthesis(reference["ws"], reference["noise"])
    assert relative_error(image, reference["img_noise"]) < 1e-5


@pytest.fixture(scope="module")
def rosinality_run_setup(tmp_path_factory):
    """A 32x32 rosinality cache (seeded random init) and, as input, one of its own images at 8x8."""
    folder = tmp_path_factory.mktemp("rosinality-run")
    torch.save(training_checkpoint(random_rosinality(seed=3)), folder / "net.pt")
    cache = folder / "cache"
    convert_quickly(folder / "net.pt", cache)
    return cache, search_inputs(cache, folder / "in")


def test_noise_layers_beyond_a_rosinality_generator_are_refused(tmp_path, rosinality_run_setup, capsys):
    assert_refused(tmp_path, rosinality_run_setup, capsys,
                   [("-bad_noise_layers", "7", "noise layers are 0..6, not 7"),
                    ("-num_trainable_noise_layers", "8", "has 7 layers with noise")])


@pytest.mark.parametrize("name", ["550000.pt", "550000.pkl"])  # a .pkl name, a torch.save content
def test_network_flag_tells_a_rosinality_checkpoint_by_its_content(tmp_path, rosinality_run_setup, monkeypatch, name):
    monkeypatch.setattr(weights, "GAUSSIAN_FIT_DRAWS", QUICK_FIT_DRAWS)
    checkpoint = tmp_path / name
    torch.save({"g_ema": random_rosinality(seed=4), "latent_avg": torch.zeros(512)}, checkpoint)
    _, inputs = rosinality_run_setup
    assert run.main(["-input_dir", str(inputs), "-output_dir", str(tmp_path / "out"), "-cache_dir",
                     str(tmp_path / "cache"), "-network", str(checkpoint), "-seed", "0", "-steps", "2"]) == 0
    assert weights.folder_family(tmp_path / "cache" / "550000") == "rosinality"


def test_families_do_not_mix_in_one_cache(tmp_path, rosinality_run_setup):
    cache, _ = rosinality_run_setup
    (tmp_path / "sg2.pkl").write_bytes(nvidia_pickle(*random_stylegan2()))
    with pytest.raises(weights.WeightsError, match="already holds a rosinality StyleGAN2 generator"):
        convert_quickly(tmp_path / "sg2.pkl", cache)


def test_python_api_loads_a_rosinality_checkpoint_like_any_network(tmp_path, rosinality_run_setup, monkeypatch):
    monkeypatch.setattr(weights, "GAUSSIAN_FIT_DRAWS", QUICK_FIT_DRAWS)
    torch.save(training_checkpoint(random_rosinality(seed=5)), tmp_path / "net.pt")
    model = PULSE.load(network=str(tmp_path / "net.pt"), cache_dir=str(tmp_path / "cache"), device="cpu")
    _, inputs = rosinality_run_setup
    (result,) = model.upsample(inputs / "face0.png", seed=0, steps=2)
    assert len(result.noise) == 7 and model.render(result.latent, result.noise).size == (32, 32)
