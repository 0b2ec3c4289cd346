"""The cache folder format: finding, checking and loading weights; rebuilding gaussian_fit.pt."""
import hashlib
import json
import os
import shutil

import pytest
import torch

from weightfiles import families, releases, weights
import stylegan
from generators import stylegan2
from conftest import ROOT, TINY_MODEL, load_fixture
from generators.generator import Generator
from stylegan import G_mapping

SHARED_MAPPING = ROOT.parent / "shared" / "reference" / "fidelity" / "mapping.pt"


def random_mapping(seed=0):
    torch.manual_seed(seed)
    mapping = G_mapping()
    with torch.no_grad():
        for name, p in mapping.named_parameters():
            p.copy_(torch.randn_like(p) * (100 if name.endswith("weight") else 1))
    return mapping


def one_shot_fit(mapping, draws):
    """The 2020 recipe, literally: one big draw after torch.manual_seed(0)."""
    torch.manual_seed(0)
    with torch.no_grad():
        out = torch.nn.LeakyReLU(5)(mapping(torch.randn((draws, 512), dtype=torch.float32)))
    return {"mean": out.mean(0), "std": out.std(0)}


def test_chunked_gaussian_fit_agrees_with_the_one_shot_recipe():
    mapping = random_mapping()
    fit = weights.fit_gaussian(mapping, draws=5000, chunk=1024)
    reference = one_shot_fit(mapping, 5000)
    for key in ("mean", "std"):
        assert torch.allclose(fit[key], reference[key], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(fit["mean"], weights.fit_gaussian(mapping, draws=5000, seed=1)["mean"])


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_MAPPING.exists(), reason="needs ../shared/reference (8 MB mapping.pt)")
def test_full_regeneration_reproduces_the_2020_fidelity_fit():
    fit = weights.fit_gaussian(weights.load_network(SHARED_MAPPING.parent, "mapping"))
    reference = load_fixture("tiny_model/gaussian_fit.pt")
    assert torch.allclose(fit["mean"], reference["mean"], atol=1e-5)
    assert torch.allclose(fit["std"], reference["std"], atol=1e-5)


def test_missing_gaussian_fit_is_rebuilt_from_mapping_and_saved(tmp_path, monkeypatch):
    monkeypatch.setattr(families, "BUNDLED_FIT", tmp_path / "no_bundled_fit.pt")
    monkeypatch.setattr(weights, "GAUSSIAN_FIT_DRAWS", 2048)
    mapping = random_mapping()
    shutil.copy(TINY_MODEL / "synthesis.pt", tmp_path / "synthesis.pt")
    weights.save_tensors(mapping.state_dict(), tmp_path / "mapping.pt")
    _, prior = weights.load_generator(tmp_path)
    fit = prior.fit
    saved = weights.load_gaussian_fit(tmp_path / "gaussian_fit.pt")
    assert torch.equal(fit["mean"], saved["mean"]) and torch.equal(fit["std"], saved["std"])
    assert torch.allclose(saved["mean"], one_shot_fit(mapping, 2048)["mean"], rtol=1e-5, atol=1e-6)


def test_2020_files_without_a_fit_take_the_bundled_one_and_converted_ones_never(tmp_path):
    shutil.copy(TINY_MODEL / "synthesis.pt", tmp_path / "synthesis.pt")  # the 2020 files: no generator.json
    fit = weights.load_generator(tmp_path)[1].fit
    bundled = torch.load(ROOT / "gaussian_fit.pt", map_location="cpu", weights_only=True)
    assert torch.equal(fit["mean"], bundled["mean"])
    (tmp_path / weights.RECORD).write_text(json.dumps({"family": "stylegan1", "attributes": {}}))
    with pytest.raises(weights.WeightsError, match="has no mapping.pt"):
        weights.load_generator(tmp_path)


def test_2020_cache_names_are_found(tmp_path):
    assert weights.LINK_MD5_2020 == {name: hashlib.md5(url.encode()).hexdigest()
                                     for name, url in releases.LINKS_2020.items()}
    legacy = tmp_path / f"{weights.LINK_MD5_2020['synthesis.pt']}_synthesis (1).pt"  # as Drive may name it
    legacy.write_bytes((TINY_MODEL / "synthesis.pt").read_bytes())
    assert weights.cached_file(tmp_path, "synthesis.pt") == legacy
    assert weights.folder_family(tmp_path) == "stylegan1"
    synthesis, _ = weights.load_generator(tmp_path)
    assert synthesis.resolution == 256


def test_loading_an_empty_cache_writes_nothing(tmp_path):
    with pytest.raises(weights.WeightsError, match="holds no generator: no synthesis.pt"):
        weights.load_generator(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_a_stylegan2_cache_of_the_earlier_format_asks_for_a_new_conversion(tmp_path):
    (tmp_path / "stylegan2-synthesis.pt").write_bytes(b"")
    with pytest.raises(weights.WeightsError, match="earlier version's format.*convert the pickle again"):
        weights.load_generator(tmp_path)


def test_the_family_is_decided_by_generator_json_alone(tmp_path, monkeypatch):
    """A registry entry is all a family needs: a folder naming it is built by its functions."""
    calls = []

    def synthesis(state, attributes):
        calls.append(attributes)
        return stylegan.synthesis_from_state_dict(state)
    monkeypatch.setitem(families.FAMILIES, "test family", families.Family(
        "Test", "test files", lambda data: False, None, synthesis, lambda state, attributes: G_mapping(),
        families.mapped_gaussian))
    shutil.copy(TINY_MODEL / "synthesis.pt", tmp_path / "synthesis.pt")
    shutil.copy(TINY_MODEL / "gaussian_fit.pt", tmp_path / "gaussian_fit.pt")
    (tmp_path / weights.RECORD).write_text(json.dumps({"family": "test family", "attributes": {"x": 1}}))
    assert weights.folder_family(tmp_path) == "test family"
    weights.load_generator(tmp_path)
    assert calls == [{"x": 1}]
    (tmp_path / weights.RECORD).write_text(json.dumps({"family": "stylegan9", "attributes": {}}))
    with pytest.raises(weights.WeightsError, match="unknown generator family 'stylegan9'"):
        weights.load_generator(tmp_path)


def test_both_families_implement_the_generator_interface():
    for synthesis in (stylegan.G_synthesis(resolution=8, fmap_base=32, fmap_max=8),
                      stylegan2.SynthesisNetwork([8, 8])):
        assert isinstance(synthesis, Generator)
        assert isinstance(synthesis.default_bad_noise_layers, frozenset)
        assert synthesis.set_fast(False) is synthesis
        image = synthesis(torch.zeros(2, synthesis.num_ws, synthesis.dlatent_size),
                          [torch.zeros(2, 1, r, r) for r in synthesis.noise_sizes])
        assert image.shape == (2, 3, synthesis.resolution, synthesis.resolution)
    assert not isinstance(G_mapping(), Generator)


@pytest.mark.parametrize("content, expected", [
    (b"", "not a readable PyTorch weights file"),
    (b"garbage" * 100, "not a readable PyTorch weights file"),
])
def test_damaged_files_are_named_in_a_clear_error(tmp_path, content, expected):
    path = tmp_path / "synthesis.pt"
    path.write_bytes(content)
    with pytest.raises(weights.WeightsError, match=expected) as error:
        weights.load_network(tmp_path, "synthesis")
    assert str(path) in str(error.value)


def test_wrong_kind_of_weights_is_a_clear_error(tmp_path):
    path = tmp_path / "synthesis.pt"
    torch.save(random_mapping().state_dict(), path)  # a mapping network where synthesis belongs
    with pytest.raises(weights.WeightsError, match="not a StyleGAN-1 synthesis network"):
        weights.load_network(tmp_path, "synthesis")
    torch.save({"mean": torch.zeros(3)}, tmp_path / "gaussian_fit.pt")
    with pytest.raises(weights.WeightsError, match="not a gaussian fit"):
        weights.load_gaussian_fit(tmp_path / "gaussian_fit.pt")


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"weight": Evil()}, tmp_path / "synthesis.pt")
    with pytest.raises(weights.WeightsError):
        weights.load_network(tmp_path, "synthesis")
    assert not marker.exists()


def test_old_format_cuda_checkpoints_load_on_cpu():
    # The fixture was saved like the 2020 files: legacy (non-zip) format with CUDA storages.
    head = (TINY_MODEL / "synthesis.pt").read_bytes()[:2]
    assert head != b"PK"  # not the zip format
    model = weights.load_network(TINY_MODEL, "synthesis")
    assert next(model.parameters()).device.type == "cpu"
    assert not any(p.requires_grad for p in model.parameters())
