"""What the tests of the generator families share: a network file read as the converter reads it, a
search on a converted generator, the refusal of flags it cannot take, and a gaussian fit held
against the one its authors' code made."""
import json
import math

import pytest
import torch

import run
from bicubic import BicubicDownSample
from conftest import convert_quickly, relative_error
from runkit.image_tensors import save_tensor_image
from weightfiles import conversion, families, weights

TARGET_SIZE = 8  # the side of the inputs searched


def noise_for(synthesis, batch=2, seed=1):
    """Seeded random maps for each of `synthesis`'s noise layers (none for a network without)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 1, r, r, generator=generator) for r in synthesis.noise_sizes]


def search_inputs(cache, inputs):
    """Two inputs (one shifted) made of an image the generator in `cache` draws from its prior, at TARGET_SIZE."""
    synthesis, prior = weights.load_generator(cache)
    latent = torch.randn(1, prior.rows(False), prior.width, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        image = (synthesis(prior(latent), noise_for(synthesis, batch=1, seed=12)) + 1) / 2
        target = BicubicDownSample(synthesis.resolution // TARGET_SIZE)(image.clamp(0, 1))
    for i in range(2):
        save_tensor_image(target[0].roll(i, dims=-1), inputs / f"face{i}.png")
    return inputs


def run_search(tmp_path, setup, out, *flags):
    """run.py on `setup` (a cache folder, its inputs) into tmp_path/out: (its log's records, the folder)."""
    cache, inputs = setup
    out_dir = tmp_path / out
    code = run.main(["-input_dir", str(inputs), "-output_dir", str(out_dir), "-cache_dir", str(cache), *flags])
    assert code == 0
    return [json.loads(line) for line in (out_dir / "pulse_log.jsonl").read_text().splitlines()], out_dir


def assert_refused(tmp_path, setup, capsys, cases):
    """run.py exits with usage error 2 and the message of each (flag, value, message), writing nothing."""
    cache, inputs = setup
    for flag, value, message in cases:
        code = run.main(["-input_dir", str(inputs), "-output_dir", str(tmp_path / "refused"), "-cache_dir", str(cache),
                         flag, value])
        assert code == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "refused").exists()


def convert_bytes(folder, data, name="net", cache=None):
    """The cache folder (default: folder/<name>-cache) of the network pickle `data`, written as folder/<name>.pkl."""
    path = folder / f"{name}.pkl"
    path.write_bytes(data)
    cache = cache or folder / f"{name}-cache"
    convert_quickly(path, cache)
    return cache


def networks_of_file(path, family):
    """(synthesis, mapping) of the network file at `path`, read as the converter reads it, which
    must find it of `family`."""
    network_file = conversion.read_network(path)
    assert families.family_of(network_file) == family
    synthesis_state, mapping_state, attributes = families.FAMILIES[family].read(network_file, str(path))
    return (families.build(family, "synthesis", synthesis_state, attributes, path),
            families.build(family, "mapping", mapping_state, attributes, path))


FIT_DRAWS = 100_000
DRAWS = [FIT_DRAWS, pytest.param(weights.GAUSSIAN_FIT_DRAWS, marks=pytest.mark.slow)]


def assert_gaussian_fit_reproduced(mapping, fit_path, draws):
    """PULSE's recipe on `mapping` with `draws` draws against the authors' side 1,000,000 in
    `fit_path`: with all draws equal but for rounding; with fewer, means within 6 standard errors,
    standard deviations within 6 of theirs (kurtosis allowed up to 10)."""
    fit, want = weights.fit_gaussian(mapping, draws=draws), weights.load_gaussian_fit(fit_path)
    if draws == weights.GAUSSIAN_FIT_DRAWS:
        assert all(relative_error(fit[name], want[name]) < 1e-4 for name in ("mean", "std"))
        return
    standard_error = want["std"] / math.sqrt(draws)
    assert ((fit["mean"] - want["mean"]).abs() < 6 * standard_error).all()
    assert ((fit["std"] - want["std"]).abs() < 6 * 1.5 * standard_error).all()
    assert (fit["std"] - want["std"]).abs().max() < 0.05 * want["std"].min()
