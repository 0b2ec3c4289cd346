"""The generator and the downscaler against what the 2020 code computed."""
import json

import pytest
import torch

from bicubic import BicubicDownSample
from conftest import FIXTURES, ROOT, load_fixture, relative_error
from stylegan import G_mapping, G_synthesis, synthesis_from_state_dict


def shapes(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def test_default_modules_have_the_2020_state_dict_layout():
    layout = json.loads((FIXTURES / "state_dict_layout.json").read_text())
    assert shapes(G_synthesis()) == layout["synthesis"]
    assert shapes(G_mapping()) == layout["mapping"]


def test_tiny_model_is_rebuilt_from_its_state_dict_alone():
    state = load_fixture("tiny_model/synthesis.pt")
    model = synthesis_from_state_dict(state)
    model.load_state_dict(state, strict=True)
    assert model.resolution == 256 and model.num_layers == 14
    assert [b.epi2.noise.weight.numel() for b in model.blocks.values()] == [64, 64, 32, 16, 8, 4, 2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiny_model_reproduces_the_2020_forward_pass(dtype):
    state = load_fixture("tiny_model/synthesis.pt")
    model = synthesis_from_state_dict(state)
    model.load_state_dict(state)
    ref = load_fixture("forward.pt")
    with torch.no_grad():
        out = model.to(dtype)(ref["dlatents"].to(dtype), [n.to(dtype) for n in ref["noise"]])
    assert out.dtype == dtype
    assert relative_error(out, ref["out"]) < 1e-5


@pytest.mark.parametrize("resolution", [4, 8, 32])
def test_small_resolutions_build_and_run(resolution):
    model = G_synthesis(resolution=resolution, fmap_base=64, fmap_max=16)
    layers = model.num_layers
    noise = [torch.randn(1, 1, 2 ** (i // 2 + 2), 2 ** (i // 2 + 2)) for i in range(layers)]
    out = model(torch.randn(1, layers, 512), noise)
    assert out.shape == (1, 3, resolution, resolution)


@pytest.mark.parametrize("factor", [2, 4, 8, 16])
def test_bicubic_matches_2020(factor):
    ref = load_fixture("bicubic.pt")
    out = BicubicDownSample(factor)(ref["input"])
    assert relative_error(out, ref[f"factor{factor}"]) < 1e-6


def test_bicubic_follows_module_dtype():
    ref = load_fixture("bicubic.pt")
    down = BicubicDownSample(4).to(torch.float64)
    out = down(ref["input"].double())
    assert out.dtype == torch.float64
    assert torch.allclose(out, ref["factor4"].double(), atol=1e-5)


def test_bicubic_rejects_factors_that_are_not_powers_of_two():
    with pytest.raises(ValueError, match="power of two"):
        BicubicDownSample(3)


def test_real_2020_gaussian_fit_loads_on_cpu():
    fit = torch.load(ROOT / "gaussian_fit.pt", map_location="cpu", weights_only=True)
    assert fit["mean"].shape == fit["std"].shape == (512,)
    assert fit["mean"].mean().item() == pytest.approx(-0.2691, abs=1e-4)
    assert fit["std"].mean().item() == pytest.approx(0.4808, abs=1e-4)
