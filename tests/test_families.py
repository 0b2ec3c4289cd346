"""The contract every generator family keeps, tested once over weightfiles/families.py's FAMILIES.

Each family's sample files (tests/network_files.py) are converted as a user's would be and must:
be recognised as their family alone; leave a cache folder with a gaussian fit exactly where the
family needs one; give networks that answer what PULSE asks (generator.Generator, generator.Prior);
compute the same bits and gradients on the fast path as on the plain one; search a batch of two
as two batches of one; and, where the family declares an untrained architecture (bench.py's),
give one that its own builder takes. A family registered is tested here by adding its sample.
The lists of families outside the registry are held to it at the end.
"""
import re

import pytest
import torch

import generators
import run
from conftest import QUICK_FIT_DRAWS, ROOT, convert_quickly
from family_checks import noise_for, run_search, search_inputs
from generators.generator import Generator, Prior, missing_members
from network_files import SAMPLES
from weightfiles import conversion, families, weights

CASES = [pytest.param((family, name), id=f"{family}-{name}") for family, samples in SAMPLES.items()
         for name in samples]


def test_every_family_has_a_sample():
    assert list(SAMPLES) == list(families.FAMILIES)


@pytest.fixture(scope="module", params=CASES)
def sample(request, tmp_path_factory):
    """(family name, the sample file, the cache folder it converts into, two inputs that generator drew)."""
    family, name = request.param
    folder = tmp_path_factory.mktemp(f"{family}-{name}".replace(" ", "-"))
    path = folder / "network"
    SAMPLES[family][name](path)
    cache = folder / "cache"
    convert_quickly(path, cache)
    return family, path, cache, search_inputs(cache, folder / "in")


def test_its_file_is_recognised_as_its_family_alone(sample):
    family, path, cache, _ = sample
    network_file = conversion.read_network(path)
    assert [name for name, candidate in families.FAMILIES.items() if candidate.recognises(network_file)] == [family]
    assert families.family_of(network_file) == weights.folder_family(cache) == family


def test_its_cache_holds_a_gaussian_fit_exactly_where_the_family_needs_one(sample):
    family, _, cache, _ = sample
    needs_fit = families.family(family).needs_fit
    fit_files = {"mapping.pt", "gaussian_fit.pt"} if needs_fit else set()
    assert {p.name for p in cache.iterdir()} == {"synthesis.pt", weights.RECORD, *fit_files}
    _, prior = weights.load_generator(cache)
    if not needs_fit:
        assert prior.fit is None
        return
    want = weights.fit_gaussian(weights.load_network(cache, "mapping"), draws=QUICK_FIT_DRAWS)
    assert all(torch.equal(prior.fit[key], want[key]) for key in ("mean", "std"))


def test_its_networks_answer_what_pulse_asks(sample):
    _, _, cache, _ = sample
    synthesis, prior = weights.load_generator(cache)
    assert missing_members(synthesis, Generator) == [] and missing_members(prior, Prior) == []
    latent_in = prior(torch.randn(2, prior.rows(tile_latent=False), prior.width))
    assert latent_in.shape == (2, synthesis.num_ws, synthesis.dlatent_size)
    side = synthesis.resolution
    assert synthesis(latent_in, noise_for(synthesis)).shape == (2, 3, side, side)
    assert prior.rows(tile_latent=True) == 1


def test_its_fast_path_gives_the_same_bits_and_gradients(sample):
    _, _, cache, _ = sample
    synthesis, _ = weights.load_generator(cache)
    ws = torch.randn(2, synthesis.num_ws, synthesis.dlatent_size, requires_grad=True)
    outputs, grads = [], []
    for fast in (False, True, True):  # the second fast call reuses the stored tensors
        out = synthesis.set_fast(fast)(ws, noise_for(synthesis))
        (grad,) = torch.autograd.grad(out.square().sum(), ws)
        outputs.append(out)
        grads.append(grad)
    assert all(torch.equal(outputs[0], o) for o in outputs) and all(torch.equal(grads[0], g) for g in grads)


def test_a_batch_of_two_searches_as_two_batches_of_one(tmp_path, sample):
    """A float64 search of the two inputs in one batch follows the same trajectories as two searches
    (an eps far below the 2020 one, so that no L2 is clamped: a small random network's images vary little)."""
    _, _, cache, inputs = sample
    flags = ["-seed", "7", "-steps", "6", "-precision", "fp64", "-eps", "1e-12"]
    batched, _ = run_search(tmp_path, (cache, inputs), "b2", *flags, "-batch_size", "2")
    alone, _ = run_search(tmp_path, (cache, inputs), "b1", *flags, "-batch_size", "1")
    assert len(batched) == len(alone) == 2
    for got, want in zip(batched, alone):
        assert got["best_step"] == want["best_step"]
        for g, w in zip(got["trajectory"], want["trajectory"]):
            assert g == pytest.approx(w, rel=1e-9)


def test_its_untrained_architecture_is_one_its_builder_takes(sample):
    """bench.py times `untrained`: the family's own network, which its state dict rebuilds."""
    family, _, cache, _ = sample
    chosen = families.family(family)
    if chosen.untrained is None:
        pytest.skip(f"{family} declares no untrained architecture")
    network = chosen.untrained(16)
    assert network.resolution == 16 and missing_members(network, Generator) == []
    rebuilt = chosen.synthesis(network.state_dict(), weights.read_record(cache)["attributes"])
    rebuilt.load_state_dict(network.state_dict(), strict=True)
    assert type(chosen.untrained(None)) is type(network)


# ---- the lists of families outside the registry -------------------------------------------------

def test_the_docs_table_has_a_row_for_each_family_in_order():
    text = (ROOT / "docs" / "generators.md").read_text()
    table = text[text.index("## Formats accepted"):text.index("Every family is converted")]
    assert re.findall(r"^\| `(\w+)` \|", table, re.M) == list(families.FAMILIES)


def test_the_network_help_names_every_family():
    help_text = next(action.help for action in run.build_parser()._actions if "-network" in action.option_strings)
    assert all(family.title in help_text for family in families.FAMILIES.values()), help_text


def test_the_generators_index_names_every_module_there():
    modules = sorted(path.name for path in (ROOT / "generators").glob("*.py") if path.name != "__init__.py")
    assert [name for name in modules if name not in generators.__doc__] == []
