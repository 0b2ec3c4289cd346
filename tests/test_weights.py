"""Finding, downloading, checking and loading weights; rebuilding gaussian_fit.pt."""
import hashlib
import os

import pytest
import torch

import weights
from conftest import ROOT, TINY_MODEL, load_fixture
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
    fit = weights.fit_gaussian(weights.load_mapping(SHARED_MAPPING))
    reference = load_fixture("tiny_model/gaussian_fit.pt")
    assert torch.allclose(fit["mean"], reference["mean"], atol=1e-5)
    assert torch.allclose(fit["std"], reference["std"], atol=1e-5)


def test_missing_gaussian_fit_is_rebuilt_from_mapping_and_saved(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "SCRIPT_DIR", tmp_path / "no_bundled_fit")
    monkeypatch.setattr(weights, "GAUSSIAN_FIT_DRAWS", 2048)
    mapping = random_mapping()
    weights.save_tensors(mapping.state_dict(), tmp_path / "mapping.pt")
    fit = weights.gaussian_fit_for(tmp_path, log=lambda _: None)
    saved = weights.load_gaussian_fit(tmp_path / "gaussian_fit.pt")
    assert torch.equal(fit["mean"], saved["mean"]) and torch.equal(fit["std"], saved["std"])
    assert torch.allclose(saved["mean"], one_shot_fit(mapping, 2048)["mean"], rtol=1e-5, atol=1e-6)


def test_bundled_gaussian_fit_is_found_next_to_the_scripts(tmp_path):
    fit = weights.gaussian_fit_for(tmp_path)  # empty cache: falls back to the repo's file
    bundled = torch.load(ROOT / "gaussian_fit.pt", map_location="cpu", weights_only=True)
    assert torch.equal(fit["mean"], bundled["mean"])


def test_2020_cache_names_are_found(tmp_path):
    md5 = hashlib.md5(weights.URLS["synthesis.pt"].encode()).hexdigest()
    legacy = tmp_path / f"{md5}_synthesis.pt"
    legacy.write_bytes((TINY_MODEL / "synthesis.pt").read_bytes())
    assert weights.cached_file(tmp_path, "synthesis.pt") == legacy
    assert weights.load_synthesis(legacy).resolution == 256


def test_failed_download_says_which_file_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setitem(weights.URLS, "mapping.pt", "http://127.0.0.1:9/mapping.pt")
    with pytest.raises(weights.WeightsError) as error:
        weights.find_or_download(tmp_path, "mapping.pt")
    message = str(error.value)
    assert str(tmp_path / "mapping.pt") in message and "convert_weights.py" in message
    assert not any(tmp_path.iterdir())  # nothing half-downloaded is left behind


def test_loading_an_empty_cache_downloads_nothing(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("load_generator must leave downloads to weight_sources")
    monkeypatch.setattr(weights, "fetch", no_download)
    with pytest.raises(weights.WeightsError, match="holds no generator: no synthesis.pt"):
        weights.load_generator(tmp_path, log=lambda _: None)


@pytest.mark.parametrize("content, expected", [
    (b"", "not a readable PyTorch weights file"),
    (b"garbage" * 100, "not a readable PyTorch weights file"),
])
def test_damaged_files_are_named_in_a_clear_error(tmp_path, content, expected):
    path = tmp_path / "synthesis.pt"
    path.write_bytes(content)
    with pytest.raises(weights.WeightsError, match=expected) as error:
        weights.load_synthesis(path)
    assert str(path) in str(error.value)


def test_wrong_kind_of_weights_is_a_clear_error(tmp_path):
    path = tmp_path / "synthesis.pt"
    torch.save(random_mapping().state_dict(), path)  # a mapping network where synthesis belongs
    with pytest.raises(weights.WeightsError, match="not a StyleGAN-1 synthesis network"):
        weights.load_synthesis(path)
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
        weights.load_synthesis(tmp_path / "synthesis.pt")
    assert not marker.exists()


def test_old_format_cuda_checkpoints_load_on_cpu():
    # The fixture was saved like the 2020 files: legacy (non-zip) format with CUDA storages.
    head = (TINY_MODEL / "synthesis.pt").read_bytes()[:2]
    assert head != b"PK"  # not the zip format
    model = weights.load_synthesis(TINY_MODEL / "synthesis.pt")
    assert next(model.parameters()).device.type == "cpu"
    assert not any(p.requires_grad for p in model.parameters())
