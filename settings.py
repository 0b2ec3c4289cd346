"""Every setting of a PULSE run, declared once (see runkit/options.py), with the 2020 defaults:

- SearchConfig: how one search runs (run.py's search flags, `upsample`'s keywords, the page's boxes,
  the sweep's grid), and RECIPES, named sets of its values;
- JobSettings: how many results of each input, from which seeds, searched how many at a time;
- ModelOptions: which generator, and how it computes (ComputeOptions; `PULSE.load`'s keywords).

Plain Python, no torch: the scripts make their flags and --help from these alone.
"""
import os
from dataclasses import asdict, dataclass

from parsed_text import LossString, NoiseLayers
from runkit.options import Finite, Whole, check_fields, check_value, from_keywords, option
from weightfiles.releases import PACKAGED

MAX_SEED = 2 ** 64 - 1  # the largest seed torch.Generator takes
NOISE_TYPES = ("zero", "fixed", "trainable")
OPTIMIZERS = ("sgd", "adam", "sgdm", "adamax")        # made in search.py (search.OPTIMIZERS)
PRECISIONS = ("fp32", "fp64", "bf16", "fp16")         # their dtypes: runkit/speed.py (speed.DTYPES)


def linear1cycle(step, steps):
    return (9 * (1 - abs(step / steps - 1 / 2) * 2) + 1) / 10


def linear1cycledrop(step, steps):
    """One linear cycle over the first 90% of the steps, then a linear drop to lr / 1000."""
    if step < 0.9 * steps:
        return (9 * (1 - abs(step / (0.9 * steps) - 1 / 2) * 2) + 1) / 10
    return 1 / 10 + (step - 0.9 * steps) / (0.1 * steps) * (1 / 1000 - 1 / 10)


# The factor of the peak learning rate at each step of a search of `steps` steps.
SCHEDULES = {
    "fixed": lambda step, steps: 1,
    "linear1cycle": linear1cycle,
    "linear1cycledrop": linear1cycledrop,
}

# Named sets of search settings, applied under the settings given explicitly (recipe_config). "2020" is
# SearchConfig's own defaults; "converge"'s values were chosen from the measurements in docs/tuning.md.
RECIPES = {
    "2020": {},
    "converge": {"learning_rate": 0.8, "lr_schedule": "fixed", "steps": 100, "patience": 40, "max_steps": 200,
                 "tries": 8, "stop_at_eps": True},
}


@dataclass
class SearchConfig:
    """The search settings: run.py's search flags and `upsample`'s keywords, with the 2020 defaults.
    `recipe` names the recipe the values started from: recipe_config, which the scripts and `upsample`
    build a SearchConfig with, applies it (SearchConfig itself takes every value as given).
    The two written as text are parsed here when they come as plain text (from a run log or a
    keyword, say); run.py hands them over parsed. The one place that checks them: a value of the
    wrong type or out of range raises ValueError naming the setting and what it takes."""
    loss_str: LossString = option(LossString("100*L2+0.05*GEOCROSS"), "weighted sum of L2, L1 and GEOCROSS terms",
                                  parse=LossString)
    eps: float = option(2e-3, "target for the downscaling loss L2; a search that never reaches it is NOT CONVERGED "
                              "(with 0, L2 is not clamped and no search converges)", Finite(zero_allowed=True))
    noise_type: str = option("trainable", "noise inputs of the generator: zero, fixed random, or trainable",
                             choices=NOISE_TYPES)
    num_trainable_noise_layers: int = option(
        5, "with -noise_type trainable, how many of the first noise layers are optimised", Whole(0))
    tile_latent: bool = option(False, "search one latent vector shared by all layers instead of one per layer")
    bad_noise_layers: NoiseLayers | None = option(
        None, "dot-separated noise layers set to zero (they add artifacts); by default the generator's own: the "
              "1024x1024 StyleGAN's layer 17 as in 2020, a StyleGAN2's last", parse=NoiseLayers)
    opt_name: str = option("adam", "optimizer of the projected gradient descent", choices=OPTIMIZERS)
    learning_rate: float = option(0.4, "peak learning rate", Finite())
    steps: int = option(100, "optimisation steps", Whole(1))
    lr_schedule: str = option("linear1cycledrop", "learning-rate schedule over the steps", choices=tuple(SCHEDULES))
    tries: int = option(1, "searches per result at most: one that ends NOT CONVERGED is run again from a new seed "
                           "(try t of duplicate k uses seed+k-1+(t-1)*duplicates); the first that converges is "
                           "kept, else the one with the lowest L2", Whole(1))
    stop_at_eps: bool = option(False, "end a search at the first step whose L2 reaches -eps, with that step's image "
                                      "(not in 2020, which always ran every step and kept the lowest TOTAL)")
    patience: int = option(0, "adaptive budget: end a search whose best L2 has not improved for this many steps "
                              "(stalled) and start its next try at once; 0: never", Whole(0))
    max_steps: int = option(0, "adaptive budget: a search still improving at -steps (not stalled, see -patience, "
                               "which it needs) goes on, up to this many steps; the learning-rate schedule runs over "
                               "them; 0: every search ends at -steps", Whole(0))
    recipe: str = option("2020", "named search settings applied before the ones given: 2020 (the defaults) or "
                                 "converge (the adaptive budget and levers measured in docs/tuning.md to converge "
                                 "nearly every face); a setting given explicitly beats the recipe's",
                         choices=tuple(RECIPES))

    def __post_init__(self):
        if not isinstance(self.loss_str, str):
            raise ValueError(f"loss_str must be text such as '100*L2+0.05*GEOCROSS', got {self.loss_str!r}")
        if isinstance(self.bad_noise_layers, int) and not isinstance(self.bad_noise_layers, bool):
            self.bad_noise_layers = str(self.bad_noise_layers)  # one layer's number
        if not isinstance(self.bad_noise_layers, (str, type(None))):
            raise ValueError(f"bad_noise_layers must be None or text such as '17' or '3.5.17', "
                             f"got {self.bad_noise_layers!r}")
        for name, parse in (("loss_str", LossString), ("bad_noise_layers", NoiseLayers)):
            if getattr(self, name) is not None:
                try:
                    setattr(self, name, parse(getattr(self, name)))
                except ValueError as e:
                    raise type(e)(f"{name}: {e}") from None
        check_fields(self)
        if self.max_steps != 0:
            check_value(Whole(self.steps), self.max_steps, "max_steps")
            if not self.patience:
                raise ValueError("max_steps needs patience: past steps, a search goes on while it improves, "
                                 "which patience measures")

    @property
    def last_step(self):
        """The step at which every search ends at the latest: max_steps with the adaptive budget, else steps."""
        return self.max_steps or self.steps

    def ending(self, step, since_best_l2, reached_eps):
        """Why a search ends after its `step`-th step, or None while it goes on: "converged" (`reached_eps`:
        stop_at_eps stops it at this step), "stalled" (`since_best_l2`, the steps since its best L2 so
        far, has come to patience), "ceiling" (max_steps done), "steps" (steps done, without max_steps).
        A search that a stop cuts short ends "interrupted" (search.Search.result)."""
        if reached_eps:
            return "converged"
        if self.patience and since_best_l2 >= self.patience:
            return "stalled"
        if step == self.last_step:
            return "ceiling" if self.max_steps else "steps"
        return None


def recipe_config(recipe=SearchConfig.recipe, **given):
    """The SearchConfig of `recipe`'s settings (RECIPES) with the settings `given` over them; ValueError
    for a recipe that is not one, TypeError listing the settings for a name SearchConfig lacks."""
    recipe_settings = RECIPES.get(recipe, {}) if isinstance(recipe, str) else {}  # SearchConfig refuses another
    return from_keywords(SearchConfig, {**recipe_settings, **given, "recipe": recipe}, "search setting")


@dataclass
class JobSettings:
    """Which results a run makes of its inputs and how many it searches at once: run.py's flags of
    these names, `upsample`'s keywords and the page's boxes."""
    seed: int | None = option(None, "seed of the first duplicate (duplicate k uses seed+k-1); drawn at random and "
                                    "logged if not given", Whole(0, MAX_SEED))
    duplicates: int = option(1, "high-resolution images per input, each from its own seed", Whole(1))
    batch_size: int = option(1, "searches run together (in float64 results do not depend on it; in float32 "
                                "rounding does)", Whole(1))

    def __post_init__(self):
        check_fields(self)

    def check_seeds(self, tries):
        """ValueError unless every search's seed fits torch's: duplicate k's try t uses
        seed + k - 1 + (t - 1) * duplicates (inputs.Job.seed_of_try)."""
        if self.seed is not None:
            check_value(Whole(0, MAX_SEED - (self.duplicates * tries - 1)), self.seed, "seed")


@dataclass
class ComputeOptions:
    """How the model computes: `from_generator`'s keywords, and part of ModelOptions."""
    precision: str = option("fp32", "float type of the model and the search (random draws are always float32); bf16 "
                                    "and fp16 run the generator under autocast, faster and with slightly different "
                                    "results (fp16 only on a GPU)", choices=PRECISIONS)
    speedups: bool = option(True, "run the 2020 generator ops: the same results, about 2x slower on the CPU")
    compile: bool = option(False, "torch.compile the generator: faster steps after a compilation of a minute or "
                                  "more (needs a C++ compiler on the CPU); results differ slightly")

    def __post_init__(self):
        check_fields(self)


@dataclass
class GeneratorChoice:
    """Which generator `load` finds, and where: the other part of ModelOptions."""
    network: str | None = option(
        None, "another generator: a folder of converted weights; a network file or its URL (NVIDIA's StyleGAN-1, "
              "StyleGAN2 or StyleGAN3 pickle, a rosinality StyleGAN2 or a DCGAN checkpoint), converted once into "
              f"<cache_dir>/<name>/; or a packaged generator by name ({', '.join(PACKAGED)}; see docs/generators.md)",
        metavar="PATH_OR_URL")
    cache_dir: str = option("cache", "folder with synthesis.pt (and mapping.pt or gaussian_fit.pt); when it has "
                                     "none, NVIDIA's FFHQ model is downloaded and converted into it")
    keep_pickle: bool = option(False, "keep a downloaded network pickle next to its conversion (NVIDIA's is about "
                                      "300 MB)")

    def __post_init__(self):
        if self.network is not None and not isinstance(self.network, (str, os.PathLike)):
            raise ValueError(f"network must be None, a path or a URL, got {self.network!r}")
        if not isinstance(self.cache_dir, (str, os.PathLike)):
            raise ValueError(f"cache_dir must be a folder's path, got {self.cache_dir!r}")
        check_fields(self)


@dataclass
class ModelOptions(ComputeOptions, GeneratorChoice):
    """What `load` takes besides the device: which generator (GeneratorChoice's fields, first) and
    how it computes (ComputeOptions's): run.py's and app.py's flags of the same names; `speedups` is
    their -no_speedups turned round."""

    def __post_init__(self):
        GeneratorChoice.__post_init__(self)  # checks every field


def result_settings(search, precision, compile):
    """The settings that decide a result besides the weights and the seed: the search's (a
    SearchConfig), the precision and compilation. A log line keeps them in its args, and -resume
    compares them."""
    return {**asdict(search), "precision": precision, "compile": compile}
