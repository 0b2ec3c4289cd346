"""The PULSE latent search (Menon et al., CVPR 2020), and the Python API over it.

Find a latent of a frozen generator whose image, downscaled bicubically, matches a low-resolution
input. The order of operations is the 2020 one, step by step: build `latent_in` from the latent
through the generator's prior (for a StyleGAN, the Gaussian fit), generate, compute the losses,
remember the best image, backward, optimizer step with the spherical projection, scheduler step.

    import PULSE
    model = PULSE.load(cache_dir="cache")            # the generator, as run.py finds it
    results = model.upsample("input/face.png", seed=0, steps=100)
    results[0].image.save("face_hr.png")             # the best image; see Result for the rest

A network built in Python is searched through `PULSE.from_generator(network, prior)` (see
generators/generator.py for what it must answer, and docs/generators.md).
"""
import importlib.machinery
import inspect
import logging
import math
import numbers
import os
import sys
import time
import warnings
from collections import deque
from dataclasses import dataclass, field, fields, replace
from functools import cache, partial
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
logger = logging.getLogger("pulse")


def on_sys_path(folder):
    return any(Path(entry or ".").resolve() == folder for entry in sys.path if isinstance(entry, str))


if __name__ != "PULSE" and not on_sys_path(HERE):  # vendored: imported as a package's module (gitmodules.pulse.PULSE)
    sys.path.append(str(HERE))  # for its own modules' plain names; last, so that a module they would hide is named


def shadowing(error):
    """What to say when `error` comes from a module of someone else's that has the name of one of the
    project's: these are top-level modules with plain names (device, loss, generator, ...), so Python
    takes the one of that name already imported, or the first on sys.path. None for another error."""
    top = (error.name or "").partition(".")[0]
    ours = HERE / f"{top}.py" if (HERE / f"{top}.py").is_file() else HERE / top
    theirs = getattr(sys.modules.get(top), "__file__", None) or error.path
    if not top or not ours.exists() or theirs is None or Path(theirs).resolve().is_relative_to(ours):
        return None
    return (f"{theirs} stands where PULSE needs its own {ours.name} ({ours}): Python allows one module named "
            f"{top!r}. Rename yours, or put {HERE} first on sys.path and leave yours out of this session")


try:
    from runkit import cli, cpu_threads, inputs, runlog, speed
    from runkit.inputs import Input  # noqa: F401 (the API's: upsample takes one to name its results)
    from device import pick_device
    from errors import UsageError
    from generators.generator import Generator, Prior, missing_members
    from loss import LossBuilder, LossString
    from parsed_text import ParsedText
    from runkit.images import to_pil
    from SphericalOptimizer import SphericalOptimizer
    from weightfiles.releases import PACKAGED
    from weightfiles.weight_sources import weights_folder
    from weightfiles.weights import load_generator
except ImportError as e:  # from another folder: the README's Python section says how
    if shadowing(e) is None:
        raise
    raise ImportError(shadowing(e)) from e


def own_modules():
    """(name, where) of each of the project's top-level modules imported so far: a file or package at its root."""
    for name, module in list(sys.modules.items()):
        path = Path(getattr(module, "__file__", None) or "/").resolve()
        where = path.parent if path.name == "__init__.py" else path
        if "." not in name and where.parent == HERE:
            yield name, where


def hidden_modules():
    """What to say of each module of someone else's that one of the project's hides: one of the same
    name further along sys.path (a folder of no Python aside), which `import <name>` no longer reaches:
    its owner's code gets PULSE's module instead."""
    others = [entry for entry in sys.path if isinstance(entry, str) and Path(entry or ".").resolve() != HERE]
    for name, ours in own_modules():
        theirs = importlib.machinery.PathFinder.find_spec(name, others)
        if theirs is not None and theirs.origin and not Path(theirs.origin).resolve().is_relative_to(ours):
            yield (f"PULSE's {ours} hides {theirs.origin}: Python allows one module named {name!r}, so "
                   f"`import {name}` gives PULSE's in this session. Rename yours to use it beside PULSE")


for clash in hidden_modules():
    warnings.warn(clash, stacklevel=2)

OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "sgdm": partial(torch.optim.SGD, momentum=0.9),
    "adamax": torch.optim.Adamax,
}
NOISE_TYPES = ("zero", "fixed", "trainable")
MAX_SEED = 2 ** 64 - 1  # the largest seed torch.Generator takes


def linear1cycle(step, steps):
    return (9 * (1 - abs(step / steps - 1 / 2) * 2) + 1) / 10


def linear1cycledrop(step, steps):
    """One linear cycle over the first 90% of the steps, then a linear drop to lr / 1000."""
    if step < 0.9 * steps:
        return (9 * (1 - abs(step / (0.9 * steps) - 1 / 2) * 2) + 1) / 10
    return 1 / 10 + (step - 0.9 * steps) / (0.1 * steps) * (1 / 1000 - 1 / 10)


SCHEDULES = {
    "fixed": lambda step, steps: 1,
    "linear1cycle": linear1cycle,
    "linear1cycledrop": linear1cycledrop,
}


class NoiseLayerError(UsageError, ValueError):
    """The search flags name noise layers that cannot be, or that the model does not have."""


class NoiseLayers(ParsedText):
    """A -bad_noise_layers such as "3.5.17", parsed once into the set `layers` (see parsed_text.py)."""

    @staticmethod
    def parse(text):
        try:
            layers = frozenset(int(part) for part in text.split("."))
        except ValueError:
            raise NoiseLayerError(f"{text!r} is not a dot-separated list of layer numbers, e.g. 17 or 3.5.17") from None
        if any(layer < 0 for layer in layers):
            raise NoiseLayerError(f"layer numbers start at 0, got {text!r}")
        return layers

    @property
    def layers(self):
        return self.parsed


def check_whole(name, value, least, most=None):
    """ValueError naming `name` unless `value` is a whole number (not a bool) within least..most."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least
            or (most is not None and value > most)):
        within = f"of at least {least}" if most is None else f"within {least}..{most}"
        raise ValueError(f"{name} must be a whole number {within}, got {value!r}")


@cache
def note_once(message):
    """Tell the pulse logger `message` the first time this process meets it: a note on settings is
    said once, however many searches take them (evaluate.py's faces, the page's searches)."""
    logger.info(message)


def check_finite(name, value, above_zero=True):
    """ValueError naming `name` unless `value` is a finite number above 0 (or, unless `above_zero`, 0
    itself; not a bool)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or not (value > 0 if above_zero else value >= 0)):
        raise ValueError(f"{name} must be a finite number {'above 0' if above_zero else 'of 0 or more'}, "
                         f"got {value!r}")


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def from_keywords(cls, keywords, what):
    """cls(**keywords), with a TypeError that lists `what` cls takes when a keyword is not one of them."""
    known = [f.name for f in fields(cls)]
    unknown = [name for name in keywords if name not in known]
    if unknown:
        raise TypeError(f"unknown {what} {', '.join(map(repr, unknown))}; the {what}s are {', '.join(known)}")
    return cls(**keywords)


def takes_options(options):
    """Decorator of a function whose **keywords are the fields of the dataclass `options`: its signature
    (what help(), inspect and a notebook show) names each with its default, and its docstring lists
    them with their help. The function still takes them as **keywords (see from_keywords)."""
    def decorate(function):
        signature = inspect.signature(function)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        declared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
                    for f in fields(options)]
        function.__signature__ = signature.replace(parameters=own + declared)
        listed = "\n".join(f"    {f.name}: {'False: ' if cli.switched_off(f) else ''}{f.metadata['help']}"
                           for f in fields(options))
        function.__doc__ = f"{inspect.cleandoc(function.__doc__)}\n\n{options.__name__} (run.py's flags):\n{listed}"
        return function
    return decorate


def option(default, help, parse=None, choices=None, metavar=None):
    """A field of SearchConfig or ModelOptions, declared once with all that is made of it: run.py's
    flag of its name (app.py's for a model option, sweep.py's grid, the page's box), its `help`, its
    `choices`, and `parse`, how a flag's text becomes its value (an argparse type; none for an
    on/off setting or one with choices). An on/off setting that is on by default is the flag
    -no_<name>, and `help` says what that flag does (see cli.add_options)."""
    return field(default=default, metadata={"help": help, "parse": parse, "choices": choices, "metavar": metavar})


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
                                  parse=cli.parsed_by(LossString))
    eps: float = option(2e-3, "target for the downscaling loss L2; a search that never reaches it is NOT CONVERGED "
                              "(with 0, L2 is not clamped and no search converges)", parse=cli.non_negative_float)
    noise_type: str = option("trainable", "noise inputs of the generator: zero, fixed random, or trainable",
                             choices=NOISE_TYPES)
    num_trainable_noise_layers: int = option(
        5, "with -noise_type trainable, how many of the first noise layers are optimised", parse=cli.non_negative_int)
    tile_latent: bool = option(False, "search one latent vector shared by all layers instead of one per layer")
    bad_noise_layers: NoiseLayers | None = option(
        None, "dot-separated noise layers set to zero (they add artifacts); by default the generator's own: the "
              "1024x1024 StyleGAN's layer 17 as in 2020, a StyleGAN2's last", parse=cli.parsed_by(NoiseLayers))
    opt_name: str = option("adam", "optimizer of the projected gradient descent", choices=tuple(OPTIMIZERS))
    learning_rate: float = option(0.4, "peak learning rate", parse=cli.positive_float)
    steps: int = option(100, "optimisation steps", parse=cli.positive_int)
    lr_schedule: str = option("linear1cycledrop", "learning-rate schedule over the steps", choices=tuple(SCHEDULES))
    tries: int = option(1, "searches per result at most: one that ends NOT CONVERGED is run again from a new seed "
                           "(try t of duplicate k uses seed+k-1+(t-1)*duplicates); the first that converges is "
                           "kept, else the one with the lowest L2", parse=cli.positive_int)
    stop_at_eps: bool = option(False, "end a search at the first step whose L2 reaches -eps, with that step's image "
                                      "(not in 2020, which always ran every step and kept the lowest TOTAL)")
    patience: int = option(0, "adaptive budget: end a search whose best L2 has not improved for this many steps "
                              "(stalled) and start its next try at once; 0: never", parse=cli.non_negative_int)
    max_steps: int = option(0, "adaptive budget: a search still improving at -steps (not stalled, see -patience, "
                               "which it needs) goes on, up to this many steps; the learning-rate schedule runs over "
                               "them; 0: every search ends at -steps", parse=cli.non_negative_int)
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
        check_choices(self)
        check_finite("eps", self.eps, above_zero=False)
        check_finite("learning_rate", self.learning_rate)
        check_whole("steps", self.steps, 1)
        check_whole("num_trainable_noise_layers", self.num_trainable_noise_layers, 0)
        check_bool("tile_latent", self.tile_latent)
        check_whole("tries", self.tries, 1)
        check_bool("stop_at_eps", self.stop_at_eps)
        check_whole("patience", self.patience, 0)
        if self.max_steps != 0:
            check_whole("max_steps", self.max_steps, self.steps)
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
        A search that a stop cuts short ends "interrupted" (Search.result)."""
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


def check_choices(options):
    """ValueError naming the first field of `options` (a SearchConfig or ModelOptions) whose value
    is not one of its declared choices."""
    for f in fields(options):
        allowed, value = f.metadata["choices"], getattr(options, f.name)
        if allowed is not None and (not isinstance(value, str) or value not in allowed):
            raise ValueError(f"{f.name} must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(kw_only=True)
class Result(runlog.Outcome):
    """The result of one input and duplicate: its kept search (the first of its tries that converged,
    else the one whose best image has the lowest L2), that search's best image (lowest TOTAL, first
    on ties; with -stop_at_eps, the image of the step that reached eps) and how it went: the fields
    and properties of runlog.Outcome, which the run log keeps field for field (runlog.Record.of)."""
    name: str                   # the result's name: the input's name (a path's stem), with _k for duplicate k
    tensor: torch.Tensor        # the best image, [3, R, R] in [0, 1], on the CPU
    latent: torch.Tensor        # the search latent at the best step, [rows, width] (see generator.Prior), on the CPU
    noise: list                 # the noise maps at the best step, [1, r, r] each, on the CPU

    @property
    def image(self):
        """The best image as a PIL image (what run.py writes as the result PNG)."""
        return to_pil(self.tensor)


@dataclass
class Attempt:
    """Try `number` (1-based) of a job: a search from the try's own seed (see inputs.Job.seed_of_try)."""
    index: int                  # the job's place in the jobs searched
    job: inputs.Job
    number: int = 1

    @property
    def seed(self):
        return self.job.seed_of_try(self.number)


@dataclass(frozen=True)
class Row:
    """Whose search a row of a step's batch is: which input, duplicate and try (Step.rows)."""
    input: str                  # the input's path, or its label ("image 2", or an Input's)
    name: str                   # the name of the result it searches for: the input's, with _k for duplicate k
    duplicate: int              # k, from 1
    attempt: int                # which try of that duplicate, from 1 (see -tries)
    seed: int                   # the seed of this try
    step: int                   # steps this search has done (the rows of a batch may have started apart)


class Step:
    """What a step hook (`on_step`) is handed after a step's losses are computed. Row b of the batch
    is `rows[b]`'s search; `losses[name][b]`, `best_im[b]` and `best_l2[b]` are that row's."""

    def __init__(self, losses, rows, trackers, downscale):
        self.losses = losses        # {loss name: device tensor [B]}, TOTAL included
        self.rows = rows            # a Row per row of the batch
        self._trackers = trackers   # each row's best so far
        self._downscale = downscale  # the search's bicubic operator (what L2 compares with the input)

    @property
    def number(self):
        """1-based step of the first row's search: every row's, unless some rows started later."""
        return self.rows[0].step

    @property
    def best_im(self):
        """[B, 3, R, R]: each row's best image so far."""
        return torch.cat([tracker.best_im for tracker in self._trackers])

    @property
    def best_l2(self):
        """Each row's L2 at its best image so far, as floats."""
        return torch.cat([tracker.best_losses["L2"] for tracker in self._trackers]).tolist()

    def best_downscaled(self):
        """[B, 3, r, r]: each row's best image so far, downscaled as L2 compares it with the input."""
        return self._downscale(self.best_im)


def draw_start(seed, latent_shape, noise_sizes, zeroed, config):
    """Latent [1, rows, width] (`latent_shape`, the prior's) and noise maps of one sample, drawn in
    float32 on the CPU from `seed`.

    Same draws in the same order as 2020: the latent first, then one map per noise layer that is
    not zeroed (`zeroed`: indices of the layers held at zero). Drawing on the CPU makes a seed
    give the same search on every device.
    """
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn((1, *latent_shape), generator=generator)
    noise = []
    for i, size in enumerate(noise_sizes):
        if config.noise_type == "zero" or i in zeroed:
            noise.append(torch.zeros((1, 1, size, size)))
        else:
            noise.append(torch.randn((1, 1, size, size), generator=generator))
    return latent, noise


class PULSE(torch.nn.Module):
    """Holds the frozen synthesis network and its prior; `search_jobs` runs PULSE on jobs (run.py's
    folder), `upsample` on images (the Python API, a thin layer over it), `render` draws a latent.

    With `autocast_dtype` (bfloat16 or float16) the generator computes in that type under
    autocast; the search variables, the losses and the optimizer stay in the model's dtype.
    """

    def __init__(self, synthesis, prior, autocast_dtype=None):
        super().__init__()
        self.synthesis = synthesis.requires_grad_(False)
        # What the search asks of the generator (see generator.Generator): rows of latent_in, the
        # side of each noise map in the generator's layer order, the side of its images.
        self.num_ws, self.noise_sizes, self.resolution = synthesis.num_ws, synthesis.noise_sizes, synthesis.resolution
        self.prior = prior  # how a search latent becomes latent_in (generator.Prior)
        # The model's device and dtype, which .to() moves with it (the prior may hold no tensor).
        self.register_buffer("anchor", torch.zeros(()), persistent=False)
        self.autocast_dtype = autocast_dtype
        self.precision, self.compiled = "fp32", False
        self.note = None  # what a user should know about this generator (see model_note)

    @classmethod
    def build(cls, synthesis, prior, device, precision="fp32", fast=True, compile=False):
        """The model for a search: the one place that decides its device, dtype, autocast, fast path
        and compilation (`load`, `from_generator`, run.py and bench.py all build through it), and the
        CPU threads where the process has not chosen them (cpu_threads.set_default).

        `fast` computes the tensors derived from the frozen weights once, on the device, in the
        model's dtype (see generators/fastops.py); `compile` runs torch.compile on either path."""
        model_dtype, autocast_dtype = speed.precision_dtypes(precision, device)
        cpu_threads.set_default()
        model = cls(synthesis, prior, autocast_dtype).to(device, model_dtype)
        model.precision, model.compiled = precision, compile
        model.synthesis.set_fast(fast)
        if compile:
            model.synthesis = torch.compile(model.synthesis)
        return model

    def zeroed_noise_layers(self, config):
        """Indices of the noise layers held at zero: -bad_noise_layers, or the generator's own default
        (StyleGAN-1: layer 17, the last 1024x1024 one, as in 2020; StyleGAN2: its last noise layer)."""
        if config.bad_noise_layers is None:
            return self.synthesis.default_bad_noise_layers
        return config.bad_noise_layers.layers

    def check_noise_layers(self, config):
        """NoiseLayerError if the settings name noise layers beyond this model's."""
        count = len(self.noise_sizes)
        beyond = sorted(i for i in (config.bad_noise_layers.layers if config.bad_noise_layers else ()) if i >= count)
        if beyond:
            raise NoiseLayerError(f"argument -bad_noise_layers: this model's noise layers are "
                                  f"{f'0..{count - 1}' if count else 'none'}, not {', '.join(map(str, beyond))}")
        asked = config.num_trainable_noise_layers
        if asked > count and config.noise_type == "trainable" and asked != SearchConfig.num_trainable_noise_layers:
            raise NoiseLayerError(f"argument -num_trainable_noise_layers: this model has {count} layers with "
                                  f"noise, so it must be within 0..{count}")

    def start_point(self, seeds, config):
        """Batched latent and noise (each sample from its own seed) as search variables."""
        dtype, device = self.anchor.dtype, self.anchor.device
        zeroed = self.zeroed_noise_layers(config)
        latent_shape = (self.prior.rows(config.tile_latent), self.prior.width)
        starts = [draw_start(seed, latent_shape, self.noise_sizes, zeroed, config) for seed in seeds]
        latent = torch.cat([lat for lat, _ in starts]).to(device, dtype).requires_grad_(True)
        noise, noise_vars = [], []
        for i in range(len(self.noise_sizes)):
            layer = torch.cat([maps[i] for _, maps in starts]).to(device, dtype)
            trainable = (config.noise_type == "trainable" and i < config.num_trainable_noise_layers
                         and i not in zeroed)
            if trainable:
                noise_vars.append(layer.requires_grad_(True))
            noise.append(layer)
        return latent, noise, noise_vars

    def generate(self, latent, noise):
        """(latent_in, image in [0, 1]) for search latents [B, rows, width] (see generator.Prior)."""
        latent_in = self.prior(latent)
        with torch.autocast(latent_in.device.type, self.autocast_dtype, enabled=self.autocast_dtype is not None):
            image = self.synthesis(latent_in, noise)
        return latent_in, (image.to(latent_in.dtype) + 1) / 2

    def search_jobs(self, jobs, config, on_result, batch_size=1, on_step=None):
        """Search every job (see inputs.Job), `batch_size` searches at a time, handing each job's Result
        to `on_result(job, result)` as soon as it is final (not always in job order).

        A job's search that ends NOT CONVERGED is run again from its next seed, up to `config.tries`
        searches; its Result is the first that converged, else the one with the lowest L2. When a
        search ends its row of the batch goes to the next one (another try, or the next job), so a
        batch never computes finished searches. `on_step(Step)` is called after each step's losses.
        Ctrl-C, or a KeyboardInterrupt raised by `on_step` or `on_result`, ends the searches under
        way: every job with a step done gets the best of its tries so far, marked interrupted, and
        then the KeyboardInterrupt goes on up. NoiseLayerError, before any search, when `config` names
        noise layers this model does not have.
        """
        self.check_noise_layers(config)
        if config.stop_at_eps and config.eps == 0:
            note_once("note: with eps 0, stop_at_eps never stops a search early (its L2 would have to be exactly 0)")
        for group in inputs.batches(jobs, len(jobs)):  # one input size at a time
            attempts = deque(Attempt(i, job) for i, job in enumerate(group))
            BatchSearch(self, config, on_result).run(attempts, batch_size, on_step)

    @takes_options(SearchConfig)
    def upsample(self, images, seed=None, duplicates=1, batch_size=1, on_step=None, **settings):
        """PULSE on low-resolution faces: a list of Results, one per image and duplicate, in order.

        `images`: a path, a PIL image, a [3, r, r] or [B, 3, r, r] tensor in [0, 1], an Input (an
        image with the name its results take), or a list of these. `seed` is the first duplicate's
        (duplicate k uses seed + k - 1, and its try t seed + k - 1 + (t - 1) * duplicates; drawn at
        random when None, and kept in each Result). `on_step(Step)` is called after each step's
        losses. The search settings (below) are SearchConfig's fields: run.py's search flags, same
        names and defaults; `recipe` ("2020" or "converge", see RECIPES) sets some of them first, and
        those given here beat its values. An unusable image or argument raises ValueError naming it,
        before any search; a setting name SearchConfig does not have, a TypeError listing them.
        Ctrl-C (or a KeyboardInterrupt from `on_step`) returns the results so far, the stopped
        searches' marked `interrupted`.
        """
        config = recipe_config(**settings)
        self.check_noise_layers(config)  # with the other arguments, before the images are read
        check_whole("duplicates", duplicates, 1)
        check_whole("batch_size", batch_size, 1)
        if seed is not None:
            check_whole("seed", seed, 0, MAX_SEED - (duplicates * config.tries - 1))
        if on_step is not None and not callable(on_step):
            raise ValueError(f"on_step must be a function of one Step, or None; got {on_step!r}")
        named = inputs.named_inputs(images, self.resolution)
        jobs = inputs.make_jobs(named, inputs.draw_seed() if seed is None else seed, duplicates)
        results = {}
        try:
            self.search_jobs(jobs, config, lambda job, result: results.update({id(job): result}), batch_size, on_step)
        except KeyboardInterrupt:  # the stopped searches' best so far are among the results
            pass
        return [results[id(job)] for job in jobs if id(job) in results]

    @property
    def device(self):
        return self.anchor.device

    @property
    def gaussian_fit(self):
        """{"mean", "std"} of the mapping network's output (after LeakyReLU(5)) that a StyleGAN's
        prior holds; None for a generator searched without a fit (the DCGAN)."""
        return self.prior.fit

    @torch.no_grad()
    def render(self, latent, noise):
        """The image of a Result's `latent` and `noise` (PIL), as the search made it."""
        latent = latent.to(self.device, self.anchor.dtype).unsqueeze(0)
        noise = [layer.to(self.device, self.anchor.dtype).unsqueeze(0) for layer in noise]
        _, image = self.generate(latent, noise)
        return to_pil(image[0].clamp(0, 1).cpu())


@dataclass
class ModelOptions:
    """What `load` takes besides the device: which generator and how it computes (run.py's and
    app.py's flags of the same names; `speedups` is their -no_speedups turned round)."""
    network: str | None = option(
        None, "another generator: a folder of converted weights; a network file or its URL (NVIDIA's StyleGAN-1, "
              "StyleGAN2 or StyleGAN3 pickle, a rosinality StyleGAN2 or a DCGAN checkpoint), converted once into "
              f"<cache_dir>/<name>/; or a packaged generator by name ({', '.join(PACKAGED)}; see docs/generators.md)",
        metavar="PATH_OR_URL")
    cache_dir: str = option("cache", "folder with synthesis.pt (and mapping.pt or gaussian_fit.pt); when it has "
                                     "none, NVIDIA's FFHQ model is downloaded and converted into it")
    keep_pickle: bool = option(False, "keep a downloaded network pickle next to its conversion (NVIDIA's is about "
                                      "300 MB)")
    precision: str = option("fp32", "float type of the model and the search (random draws are always float32); bf16 "
                                    "and fp16 run the generator under autocast, faster and with slightly different "
                                    "results (fp16 only on a GPU)", choices=tuple(speed.PRECISIONS))
    speedups: bool = option(True, "run the 2020 generator ops: the same results, about 2x slower on the CPU")
    compile: bool = option(False, "torch.compile the generator: faster steps after a compilation of a minute or "
                                  "more (needs a C++ compiler on the CPU); results differ slightly")

    def __post_init__(self):
        if self.network is not None and not isinstance(self.network, (str, os.PathLike)):
            raise ValueError(f"network must be None, a path or a URL, got {self.network!r}")
        if not isinstance(self.cache_dir, (str, os.PathLike)):
            raise ValueError(f"cache_dir must be a folder's path, got {self.cache_dir!r}")
        for name in ("keep_pickle", "speedups", "compile"):
            check_bool(name, getattr(self, name))
        check_choices(self)


@takes_options(ModelOptions)
def load(device=None, **options):
    """The PULSE model of a generator, found as run.py finds it (see ModelOptions for `options`):
    `cache_dir` (filled by download and conversion when it has no generator) or `network` (a folder,
    a network pickle or its URL). `device`: a torch device or its name; by default device.py's
    choice (CUDA, then MPS, then the CPU; PULSE_DEVICE overrides it). Progress and notes go to the
    `pulse` logger (which the scripts show on stderr). Raises WeightsError when no generator can be
    had (the message lists each source tried and the ways on), DeviceError, or PrecisionError; a
    ValueError naming an argument of the wrong kind, a TypeError listing the options when one is
    not known."""
    options = from_keywords(ModelOptions, options, "model option")
    if not isinstance(device, (str, torch.device, type(None))):
        raise ValueError(f"device must be None, a torch.device or a name such as 'cpu' or 'cuda:0'; got {device!r}")
    device = pick_device(device)
    folder = weights_folder(options.network, options.cache_dir, options.keep_pickle)
    synthesis, prior = load_generator(folder)
    model = PULSE.build(synthesis, prior, device, options.precision, fast=options.speedups, compile=options.compile)
    model.note = model_note(folder, synthesis.resolution)
    if model.note:
        logger.info(f"note: {model.note}")
    return model


def from_generator(network, prior, device=None, precision="fp32", speedups=True, compile=False):
    """The PULSE model of a generator built in Python, nothing read or written on disk: `network` a
    torch module answering generator.Generator, `prior` a generator.Prior (SphereOfZ(nz) for a
    network fed z itself, MappedGaussian(fit, num_ws) for a StyleGAN). `device` and the rest as for
    `load`; TypeError naming what the network or the prior lacks."""
    for thing, protocol in ((network, Generator), (prior, Prior)):
        missing = missing_members(thing, protocol)
        if missing or not isinstance(thing, torch.nn.Module):
            raise TypeError(f"{type(thing).__name__} is not a torch module answering generator.{protocol.__name__}"
                            f"{': it lacks ' + ', '.join(missing) if missing else ''}")
    device = pick_device(device)
    return PULSE.build(network, prior, device, precision, fast=speedups, compile=compile)


TINY_MODEL = HERE / "tests" / "fixtures" / "tiny_model"


def model_note(folder, resolution):
    """What to tell a user whose generator is not the 1024x1024 face model PULSE was made for."""
    if Path(folder).resolve() == TINY_MODEL:
        return (f"{folder} is the bundled tiny test model ({resolution}x{resolution}, random weights): "
                f"it checks that everything runs; its results are noise, not faces")
    if resolution != 1024:
        return (f"the generator in {folder} makes {resolution}x{resolution} images, not the 1024x1024 "
                f"FFHQ faces PULSE was made for")
    return None


class Search:
    """One try under way in a row of a batch, with its own search variables, optimizer, learning-rate
    schedule, best so far and budget (its step count, best L2 and that step, why it ended): it can end,
    and leave its row to another search, while the other rows go on. The rows are stacked for the
    generator, which runs on the whole batch."""

    def __init__(self, model, attempt, config):
        self.attempt = attempt
        self.latent, self.noise, noise_vars = model.start_point([attempt.seed], config)
        self.opt = SphericalOptimizer(OPTIMIZERS[config.opt_name], [self.latent] + noise_vars, lr=config.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.opt.opt, partial(SCHEDULES[config.lr_schedule], steps=config.last_step))
        self.tracker = BestTracker(config.loss_str.terms, [self.latent] + self.noise)
        self.step = 0               # steps done
        self.best_l2, self.best_l2_step = math.inf, 0  # with patience: its lowest L2 so far, and that step
        self.ended = None           # why it ended (SearchConfig.ending), once it has
        self.start = time.time()

    def count_step(self, config, l2, reached_eps):
        """After a step: count it, and end the search if the budget says so (`l2`: the step's L2 as a
        float, None when nothing needs it)."""
        self.step += 1
        if l2 is not None and l2 < self.best_l2:
            self.best_l2, self.best_l2_step = l2, self.step
        self.ended = config.ending(self.step, self.step - self.best_l2_step, reached_eps)

    def row(self):
        job = self.attempt.job
        return Row(job.source, job.name, job.duplicate, self.attempt.number, self.attempt.seed, self.step)

    def result(self, config, interrupted):
        """This try as a Result (its `tries` are filled in by `kept`)."""
        job = self.attempt.job
        return Result(input=job.source, name=job.name, seed=self.attempt.seed, **self.tracker.result(config.eps),
                      interrupted=interrupted, seconds=time.time() - self.start,
                      stopped_at=self.step if self.ended == "converged" else None,
                      ended="interrupted" if interrupted else self.ended)


def kept(tries, interrupted=False):
    """The Result of a job from its tries' Results: the first that converged, else the lowest L2
    (the first on ties), with every try's summary."""
    best = next((r for r in tries if r.converged), None) or min(tries, key=lambda r: r.losses["L2"])
    return replace(best, interrupted=interrupted or best.interrupted, seconds=sum(r.seconds for r in tries),
                   tries=[{"seed": r.seed, "L2": r.losses["L2"], "converged": r.converged, "steps": r.steps,
                           "ended": r.ended} for r in tries])


class BatchSearch:
    """Runs attempts of jobs whose inputs share one size, `batch_size` searches at a time, each ending
    when its budget says (SearchConfig.ending: after config.steps steps in 2020); a search that ends
    frees its row for the next attempt: its own next try first, else the next job's first."""

    def __init__(self, model, config, finish):
        self.model, self.config, self.finish = model, config, finish
        self.tries = {}             # job index -> (the job, the Results of its tries so far) until it is final
        self.searches = []          # the rows of the batch
        self.loss_builder = None    # for the inputs of the rows; None when the rows changed

    def run(self, attempts, batch_size, on_step):
        try:
            while attempts or self.searches:
                self.fill(attempts, batch_size)
                self.step(on_step)
                for search in [s for s in self.searches if s.ended]:
                    self.end(search, attempts)
        except KeyboardInterrupt:
            self.keep_best_so_far()
            raise

    def fill(self, attempts, batch_size):
        while len(self.searches) < batch_size and attempts:
            self.searches.append(Search(self.model, attempts.popleft(), self.config))
            self.loss_builder = None
        if self.loss_builder is not None:
            return
        cpu_threads.follow_free_cores()  # a search runs with the thread count it starts with
        ref_im = torch.stack([search.attempt.job.image for search in self.searches])
        ref_im = ref_im.to(self.model.anchor.device, self.model.anchor.dtype)
        self.loss_builder = LossBuilder(ref_im, self.config.loss_str.terms, self.config.eps, self.model.resolution)

    def step(self, on_step):
        """One step of every row, in the 2020 order: generate, losses, best so far, backward, optimizer
        step with the spherical projection, scheduler step."""
        searches = self.searches
        for search in searches:
            search.opt.zero_grad()
        latent = torch.cat([search.latent for search in searches])
        noise = [torch.cat(layers) for layers in zip(*(search.noise for search in searches))]
        latent_in, gen_im = self.model.generate(latent, noise)
        total, losses = self.loss_builder(latent_in, gen_im)
        losses["TOTAL"] = total
        reached, l2 = self.reached_eps(losses["L2"]), self.l2_for_budget(losses["L2"])
        for b, search in enumerate(searches):
            search.count_step(self.config, l2[b], reached[b])
            search.tracker.update(search.step, {name: value[b:b + 1] for name, value in losses.items()},
                                  gen_im[b:b + 1], keep=reached[b])
        if on_step is not None:
            on_step(Step(losses, [search.row() for search in searches], [search.tracker for search in searches],
                         self.loss_builder.downscale))
        total.sum().backward()
        for search in searches:
            search.opt.step()
            search.scheduler.step()

    def reached_eps(self, l2):
        """Per row, whether stop_at_eps ends its search at this step (one read from the device a step,
        only with stop_at_eps)."""
        if not (self.config.stop_at_eps and targets_l2(self.config.loss_str.terms)):
            return [False] * len(l2)
        return (l2 <= self.config.eps).tolist()

    def l2_for_budget(self, l2):
        """Per row, the step's L2 as a float where patience needs it (one more read a step), else None."""
        return l2.tolist() if self.config.patience else [None] * len(l2)

    def end(self, search, attempts):
        """A search ran to its end: its job is final, or its next try waits first in line."""
        _, tries = self.tries.setdefault(search.attempt.index, (search.attempt.job, []))
        tries.append(search.result(self.config, interrupted=False))
        self.searches.remove(search)
        self.loss_builder = None
        if tries[-1].converged or len(tries) == self.config.tries:
            del self.tries[search.attempt.index]
            self.finish(search.attempt.job, kept(tries))
        else:
            attempt = search.attempt
            attempts.appendleft(Attempt(attempt.index, attempt.job, attempt.number + 1))

    def keep_best_so_far(self):
        """After a stop: each job with a step done gets the best of its tries so far, marked interrupted."""
        for search in self.searches:
            if search.step > 0:
                self.tries.setdefault(search.attempt.index, (search.attempt.job, []))[1].append(
                    search.result(self.config, interrupted=True))
        self.searches = []
        for index in sorted(self.tries):
            job, tries = self.tries.pop(index)
            self.finish(job, kept(tries, interrupted=True))


def targets_l2(loss_terms):
    """As in 2020 (and in the reference runs), only a search that optimises L2 can converge: with a
    loss string without L2, L2 is still reported but never counts as reaching eps."""
    return any(name == "L2" for _, name in loss_terms)


class BestTracker:
    """Keeps a search's lowest-TOTAL image on the device and its per-step loss history."""

    def __init__(self, loss_terms, variables):
        self.loss_terms = loss_terms
        self.variables = variables  # the latent and every noise map; the trainable ones change in place
        self.best_variables = None
        self.best_im = None
        self.best_losses = None  # {name: [B]}: every loss at each sample's best step so far
        self.best_step = None
        self.history = []

    @torch.no_grad()
    def update(self, step, losses, gen_im, keep=False):
        """Remember this step's image where its TOTAL is the lowest so far, or wherever `keep`."""
        losses = {name: value.detach() for name, value in losses.items()}
        if self.best_im is None:
            self.best_im = gen_im.detach().clone()
            self.best_losses = {name: value.clone() for name, value in losses.items()}
            self.best_step = torch.full_like(losses["TOTAL"], step, dtype=torch.long)
            self.best_variables = [v.detach().clone() if v.requires_grad else v for v in self.variables]
        else:
            improved = (losses["TOTAL"] < self.best_losses["TOTAL"]) | keep
            self.best_im = torch.where(improved.view(-1, 1, 1, 1), gen_im.detach(), self.best_im)
            self.best_losses = {name: torch.where(improved, value, self.best_losses[name])
                                for name, value in losses.items()}
            self.best_step = torch.where(improved, torch.full_like(self.best_step, step), self.best_step)
            self.best_variables = [torch.where(improved.view(-1, *[1] * (v.dim() - 1)), v.detach(), best)
                                   if v.requires_grad else best for v, best in zip(self.variables, self.best_variables)]
        self.history.append(losses)

    def result(self, eps):
        """The search's part of its Result (a search of one sample): best image, step, losses,
        convergence, trajectory, latent and noise, and the steps done."""
        # One transfer for the whole history: no per-step host synchronisation in the loop.
        names = list(self.history[0])
        table = {name: torch.stack([h[name][0] for h in self.history]).cpu() for name in names}
        eps_t = torch.tensor(eps, dtype=table["L2"].dtype)
        return dict(
            tensor=self.best_im[0].clamp(0, 1).cpu(),
            best_step=int(self.best_step[0]),
            losses={name: value[0].item() for name, value in self.best_losses.items()},
            converged=targets_l2(self.loss_terms) and bool((table["L2"] <= eps_t).any()),
            trajectory=[{"step": k + 1, **{name: table[name][k].item() for name in names}}
                        for k in range(len(self.history))],
            latent=self.best_variables[0][0].cpu(),
            noise=[v[0].cpu() for v in self.best_variables[1:]],
            steps=len(self.history),
        )
