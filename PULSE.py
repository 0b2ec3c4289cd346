"""The PULSE latent search (Menon et al., CVPR 2020), and the Python API over it.

Find a latent of a frozen StyleGAN whose image, downscaled bicubically, matches a low-resolution
input. The order of operations is the 2020 one, step by step: build `latent_in` from the latent
through the Gaussian fit, generate, compute the losses, remember the best image, backward,
optimizer step with the spherical projection, scheduler step.

    import PULSE
    model = PULSE.load(cache_dir="cache")            # the generator, as run.py finds it
    results = model.upsample("input/face.png", seed=0, steps=100)
    results[0].image.save("face_hr.png")             # the best image; see Result for the rest
"""
import math
import numbers
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


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
    from runkit import inputs, runlog, speed
    from device import pick_device
    from loss import LossBuilder, LossString
    from runkit.cli import ParsedText
    from runkit.images import to_pil
    from SphericalOptimizer import SphericalOptimizer
    from weightfiles.weight_sources import weights_folder
    from weightfiles.weights import load_generator
except ImportError as e:  # from another folder: the README's Python section says how
    if shadowing(e) is None:
        raise
    raise ImportError(shadowing(e)) from e

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


class NoiseLayerError(ValueError):
    """The search flags name noise layers that cannot be, or that the model does not have."""


class NoiseLayers(ParsedText):
    """A -bad_noise_layers such as "3.5.17", parsed once into the set `layers` (see cli.ParsedText)."""

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


def check_positive(name, value):
    """ValueError naming `name` unless `value` is a finite number above 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number above 0, got {value!r}")


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


@dataclass
class SearchConfig:
    """The search settings: run.py's search flags and `upsample`'s keywords, with the 2020 defaults.
    The two written as text are parsed here when they come as plain text (from a run log or a
    keyword, say); run.py hands them over parsed. The one place that checks them: a value of the
    wrong type or out of range raises ValueError naming the setting and what it takes."""
    loss_str: LossString = LossString("100*L2+0.05*GEOCROSS")
    eps: float = 2e-3
    noise_type: str = "trainable"
    num_trainable_noise_layers: int = 5
    tile_latent: bool = False
    bad_noise_layers: NoiseLayers | None = None  # None: the generator's own (StyleGAN-1 1024x1024: 17, as in 2020)
    opt_name: str = "adam"
    learning_rate: float = 0.4
    steps: int = 100
    lr_schedule: str = "linear1cycledrop"

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
        for name, allowed in (("noise_type", NOISE_TYPES), ("opt_name", OPTIMIZERS), ("lr_schedule", SCHEDULES)):
            if not isinstance(getattr(self, name), str) or getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        check_positive("eps", self.eps)
        check_positive("learning_rate", self.learning_rate)
        check_whole("steps", self.steps, 1)
        check_whole("num_trainable_noise_layers", self.num_trainable_noise_layers, 0)
        check_bool("tile_latent", self.tile_latent)


def result_settings(config, precision, compile):
    """The settings that decide a result besides the weights and the seed: the search's, the
    precision and compilation. What a Result keeps and -resume compares."""
    return {**asdict(config), "precision": precision, "compile": compile}


@dataclass
class Result:
    """One search of one input from one seed: the best image (lowest TOTAL, first on ties) and
    how the search went. What run.py writes and logs for it (see runlog.Record)."""
    input: str                  # the input's path, or its place among the images given ("image 2")
    name: str                   # the result's name: the input's stem, with _k for duplicate k
    seed: int
    base_seed: int              # the seed of the input's first duplicate
    settings: dict              # what decides it besides weights and seed: search settings, precision, compile
    tensor: torch.Tensor        # the best image, [3, R, R] in [0, 1], on the CPU
    best_step: int              # 1-based step of the best image
    losses: dict                # every loss at the best step, TOTAL included
    converged: bool             # whether L2 reached eps (only when the loss optimises L2, as in 2020)
    interrupted: bool           # whether a stop (Ctrl-C, a signal, on_step) ended the search early
    steps: int                  # steps done: fewer than asked when interrupted
    seconds: float              # wall time of the search's batch
    trajectory: list            # one {step, every loss} dict per step
    latent: torch.Tensor        # the search latent at the best step, [1 or num_ws, 512], on the CPU
    noise: list                 # the noise maps at the best step, [1, r, r] each, on the CPU

    @property
    def image(self):
        """The best image as a PIL image (what run.py writes as the result PNG)."""
        return to_pil(self.tensor)

    @property
    def status(self):
        return runlog.status(self.converged, self.interrupted, self.steps)


@dataclass
class SearchResult:
    """Per sample of the batch: the best image (lowest TOTAL, first on ties) and its record."""
    best_im: torch.Tensor          # [B, 3, R, R] in [0, 1], on the CPU
    best_step: list                # 1-based step of each sample's best image
    best_losses: list              # {loss name: value} at that step, TOTAL included
    converged: list                # whether the lowest L2 of the sample reached eps
    trajectory: list               # per sample, one {step, losses..., TOTAL} dict per step
    best_latent: torch.Tensor      # [B, 1 or num_ws, 512] at each sample's best step, on the CPU
    best_noise: list               # per noise layer, [B, 1, r, r] at each sample's best step, on the CPU
    seconds: float = 0.0
    interrupted: bool = False
    steps_done: int = 0


@dataclass
class Step:
    """What a step hook (`search(..., on_step)`) is handed after a step's losses are computed."""
    number: int                 # 1-based, as the 2020 code printed it
    losses: dict                # {loss name: device tensor [B]}, TOTAL included
    tracker: "BestTracker"      # each sample's best image, losses and step so far
    downscale: object           # the search's bicubic operator (what L2 compares with the input)

    def best_downscaled(self):
        return self.downscale(self.tracker.best_im)


def draw_start(seed, num_ws, noise_sizes, zeroed, config):
    """Latent and noise maps of one sample, drawn in float32 on the CPU from `seed`.

    Same draws in the same order as 2020: the latent first, then one map per noise layer that is
    not zeroed (`zeroed`: indices of the layers held at zero). Drawing on the CPU makes a seed
    give the same search on every device.
    """
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn((1, 1 if config.tile_latent else num_ws, 512), generator=generator)
    noise = []
    for i, size in enumerate(noise_sizes):
        if config.noise_type == "zero" or i in zeroed:
            noise.append(torch.zeros((1, 1, size, size)))
        else:
            noise.append(torch.randn((1, 1, size, size), generator=generator))
    return latent, noise


class PULSE(torch.nn.Module):
    """Holds the frozen synthesis network and the latent statistics; `search` runs PULSE on a batch
    of tensors, `upsample` on images (the Python API), `render` draws a latent.

    With `autocast_dtype` (bfloat16 or float16) the generator computes in that type under
    autocast; the search variables, the losses and the optimizer stay in the model's dtype.
    """

    def __init__(self, synthesis, gaussian_fit, autocast_dtype=None):
        super().__init__()
        self.synthesis = synthesis.requires_grad_(False)
        # What the search asks of the generator (see generator.Generator): rows of latent_in, the
        # side of each noise map in the generator's layer order, the side of its images.
        self.num_ws, self.noise_sizes, self.resolution = synthesis.num_ws, synthesis.noise_sizes, synthesis.resolution
        self.register_buffer("fit_mean", gaussian_fit["mean"].clone())
        self.register_buffer("fit_std", gaussian_fit["std"].clone())
        self.lrelu = torch.nn.LeakyReLU(negative_slope=0.2)
        self.autocast_dtype = autocast_dtype
        self.precision, self.compiled = "fp32", False
        self.note = None  # what a user should know about this generator (see model_note)

    @classmethod
    def build(cls, synthesis, fit, device, precision="fp32", fast=True, compile=False):
        """The model for a search: the one place that decides its device, dtype, autocast, fast path
        and compilation (`load`, run.py and bench.py all build through it).

        `fast` computes the tensors derived from the frozen weights once, on the device, in the
        model's dtype (see stylegan.FastOps); `compile` runs torch.compile on either path."""
        model_dtype, autocast_dtype = speed.precision_dtypes(precision, device)
        model = cls(synthesis, fit, autocast_dtype).to(device, model_dtype)
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
        dtype, device = self.fit_mean.dtype, self.fit_mean.device
        zeroed = self.zeroed_noise_layers(config)
        starts = [draw_start(seed, self.num_ws, self.noise_sizes, zeroed, config) for seed in seeds]
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
        """(latent_in, image in [0, 1]) for search latents [B, 1 or num_ws, 512]."""
        latent_in = latent.expand(-1, self.num_ws, -1)
        latent_in = self.lrelu(latent_in * self.fit_std + self.fit_mean)
        with torch.autocast(latent_in.device.type, self.autocast_dtype, enabled=self.autocast_dtype is not None):
            image = self.synthesis(latent_in, noise)
        return latent_in, (image.to(latent_in.dtype) + 1) / 2

    def search(self, ref_im, seeds, config, on_step=None):
        """Run PULSE on `ref_im` [B, 3, r, r] in [0, 1], sample b starting from `seeds[b]`.

        `on_step(Step)` is called after each step's losses (see Step). Ctrl-C, or a KeyboardInterrupt
        raised by `on_step`, ends the search early with the best so far.
        """
        ref_im = ref_im.to(self.fit_mean.device, self.fit_mean.dtype)
        latent, noise, noise_vars = self.start_point(seeds, config)
        opt = SphericalOptimizer(OPTIMIZERS[config.opt_name], [latent] + noise_vars, lr=config.learning_rate)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            opt.opt, partial(SCHEDULES[config.lr_schedule], steps=config.steps))
        loss_builder = LossBuilder(ref_im, config.loss_str.terms, config.eps, self.resolution)

        tracker = BestTracker(config.loss_str.terms, [latent] + noise)
        start = time.time()
        interrupted = False
        try:
            for step in range(1, config.steps + 1):
                opt.zero_grad()
                latent_in, gen_im = self.generate(latent, noise)
                total, losses = loss_builder(latent_in, gen_im)
                losses["TOTAL"] = total
                tracker.update(step, losses, gen_im)
                if on_step is not None:
                    on_step(Step(step, losses, tracker, loss_builder.downscale))
                total.sum().backward()
                opt.step()
                scheduler.step()
        except KeyboardInterrupt:
            if tracker.best_im is None:
                raise
            interrupted = True
        return tracker.result(config.eps, seconds=time.time() - start, interrupted=interrupted)

    def search_jobs(self, jobs, config, on_step=None):
        """One search over a batch of jobs (see inputs.Job); a Result per job, in order."""
        found = self.search(torch.stack([job.image for job in jobs]), [job.seed for job in jobs], config, on_step)
        settings = result_settings(config, self.precision, self.compiled)
        return [Result(input=job.source, name=job.name, seed=job.seed, base_seed=job.base_seed, settings=settings,
                       tensor=found.best_im[b], best_step=found.best_step[b], losses=found.best_losses[b],
                       converged=found.converged[b], interrupted=found.interrupted, steps=found.steps_done,
                       seconds=found.seconds, trajectory=found.trajectory[b], latent=found.best_latent[b],
                       noise=[layer[b] for layer in found.best_noise])
                for b, job in enumerate(jobs)]

    def upsample(self, images, seed=None, duplicates=1, batch_size=1, on_step=None, **settings):
        """PULSE on low-resolution faces: a list of Results, one per image and duplicate, in order.

        `images`: a path, a PIL image, a [3, r, r] or [B, 3, r, r] tensor in [0, 1], or a list of
        paths and images. `seed` is the first duplicate's (duplicate k uses seed + k - 1; drawn at
        random when None, and kept in each Result). `settings` are SearchConfig's fields (run.py's
        search flags, same names and defaults). An unusable image or argument raises ValueError naming
        it, before any search; a setting name SearchConfig does not have, a TypeError listing them. Ctrl-C (or a KeyboardInterrupt from `on_step`) returns the results so far, the
        stopped search's marked `interrupted`.
        """
        config = from_keywords(SearchConfig, settings, "search setting")
        self.check_noise_layers(config)
        check_whole("duplicates", duplicates, 1)
        check_whole("batch_size", batch_size, 1)
        if seed is not None:
            check_whole("seed", seed, 0, MAX_SEED - (duplicates - 1))
        if on_step is not None and not callable(on_step):
            raise ValueError(f"on_step must be a function of one Step, or None; got {on_step!r}")
        named = inputs.named_inputs(images, self.resolution)
        jobs = inputs.make_jobs(named, inputs.draw_seed() if seed is None else seed, duplicates)
        results = []
        try:
            for batch in inputs.batches(jobs, batch_size):
                results += self.search_jobs(batch, config, on_step)
                if results[-1].interrupted:
                    break
        except KeyboardInterrupt:  # before the first step of a search: nothing of it to keep
            pass
        return results

    @property
    def device(self):
        return self.fit_mean.device

    @property
    def gaussian_fit(self):
        """{"mean", "std"} of the mapping network's output (after LeakyReLU(5)), as PULSE uses it."""
        return {"mean": self.fit_mean, "std": self.fit_std}

    @torch.no_grad()
    def render(self, latent, noise):
        """The image of a Result's `latent` and `noise` (PIL), as the search made it."""
        latent = latent.to(self.device, self.fit_mean.dtype).unsqueeze(0)
        noise = [layer.to(self.device, self.fit_mean.dtype).unsqueeze(0) for layer in noise]
        _, image = self.generate(latent, noise)
        return to_pil(image[0].clamp(0, 1).cpu())


def load(device=None, log=None, **options):
    """The PULSE model of a generator, found as run.py finds it (see ModelOptions for `options`):
    `cache_dir` (filled by download and conversion when it has no generator) or `network` (a folder,
    a network pickle or its URL). `device`: a torch device or its name; by default device.py's
    choice (CUDA, then MPS, then the CPU; PULSE_DEVICE overrides it). Progress goes to `log`
    (default: stderr). Raises WeightsError when no generator can be had (the message lists each
    source tried and the ways on), DeviceError, or PrecisionError; a ValueError naming an argument
    of the wrong kind, a TypeError listing the options when one is not known."""
    options = from_keywords(ModelOptions, options, "model option")
    if not isinstance(device, (str, torch.device, type(None))):
        raise ValueError(f"device must be None, a torch.device or a name such as 'cpu' or 'cuda:0'; got {device!r}")
    if log is not None and not callable(log):
        raise ValueError(f"log must be a function of one line of text, or None; got {log!r}")
    log = log or partial(print, file=sys.stderr)
    device = pick_device(str(device)) if device is not None else pick_device()
    folder = weights_folder(options.network, options.cache_dir, options.keep_pickle, log)
    synthesis, fit = load_generator(folder, log)
    model = PULSE.build(synthesis, fit, device, options.precision, fast=options.speedups, compile=options.compile)
    model.note = model_note(folder, synthesis.resolution)
    if model.note:
        log(f"note: {model.note}")
    return model


@dataclass
class ModelOptions:
    """What `load` takes besides the device: which generator and how it computes (run.py's flags of
    the same names; `speedups` is run.py's -no_speedups turned round)."""
    network: str | None = None  # a converted folder, a StyleGAN network pickle, or its URL
    cache_dir: str = "cache"    # where weights are looked up, downloaded and converted
    keep_pickle: bool = False   # keep a downloaded pickle beside its conversion
    precision: str = "fp32"     # fp32, fp64, bf16 or fp16 (see speed.PRECISIONS)
    speedups: bool = True       # the fast generator ops (same results); False: the 2020 ops
    compile: bool = False       # torch.compile the generator (results differ slightly)

    def __post_init__(self):
        if self.network is not None and not isinstance(self.network, (str, os.PathLike)):
            raise ValueError(f"network must be None, a path or a URL, got {self.network!r}")
        if not isinstance(self.cache_dir, (str, os.PathLike)):
            raise ValueError(f"cache_dir must be a folder's path, got {self.cache_dir!r}")
        for name in ("keep_pickle", "speedups", "compile"):
            check_bool(name, getattr(self, name))
        if not isinstance(self.precision, str) or self.precision not in speed.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(speed.PRECISIONS)}, got {self.precision!r}")


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


class BestTracker:
    """Keeps each sample's lowest-TOTAL image on the device and the per-step loss history."""

    def __init__(self, loss_terms, variables):
        self.loss_terms = loss_terms
        self.variables = variables  # the latent and every noise map; the trainable ones change in place
        self.best_variables = None
        self.best_im = None
        self.best_losses = None  # {name: [B]}: every loss at each sample's best step so far
        self.best_step = None
        self.history = []

    @torch.no_grad()
    def update(self, step, losses, gen_im):
        losses = {name: value.detach() for name, value in losses.items()}
        if self.best_im is None:
            self.best_im = gen_im.detach().clone()
            self.best_losses = {name: value.clone() for name, value in losses.items()}
            self.best_step = torch.full_like(losses["TOTAL"], step, dtype=torch.long)
            self.best_variables = [v.detach().clone() if v.requires_grad else v for v in self.variables]
        else:
            improved = losses["TOTAL"] < self.best_losses["TOTAL"]
            self.best_im = torch.where(improved.view(-1, 1, 1, 1), gen_im.detach(), self.best_im)
            self.best_losses = {name: torch.where(improved, value, self.best_losses[name])
                                for name, value in losses.items()}
            self.best_step = torch.where(improved, torch.full_like(self.best_step, step), self.best_step)
            self.best_variables = [torch.where(improved.view(-1, *[1] * (v.dim() - 1)), v.detach(), best)
                                   if v.requires_grad else best for v, best in zip(self.variables, self.best_variables)]
        self.history.append(losses)

    def result(self, eps, seconds, interrupted):
        # One transfer for the whole history: no per-step host synchronisation in the loop.
        names = list(self.history[0])
        table = {name: torch.stack([h[name] for h in self.history]).cpu() for name in names}
        batch = self.best_im.shape[0]
        best_steps = self.best_step.cpu().tolist()
        trajectory = [[{"step": k + 1, **{name: table[name][k, b].item() for name in names}}
                       for k in range(len(self.history))] for b in range(batch)]
        best = {name: value.cpu().tolist() for name, value in self.best_losses.items()}
        eps_t = torch.tensor(eps, dtype=table["L2"].dtype)
        # As in 2020 (and in the reference runs), only a search that optimises L2 can converge:
        # with a loss string without L2, L2 is still reported but never counts as reaching eps.
        targets_l2 = any(name == "L2" for _, name in self.loss_terms)
        return SearchResult(
            best_im=self.best_im.clamp(0, 1).cpu(),
            best_step=best_steps,
            best_losses=[{name: best[name][b] for name in names} for b in range(batch)],
            converged=[targets_l2 and bool((table["L2"][:, b] <= eps_t).any()) for b in range(batch)],
            trajectory=trajectory,
            best_latent=self.best_variables[0].cpu(),
            best_noise=[v.cpu() for v in self.best_variables[1:]],
            seconds=seconds,
            interrupted=interrupted,
            steps_done=len(self.history),
        )
