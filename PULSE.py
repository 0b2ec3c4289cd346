"""PULSE (Menon et al., CVPR 2020) as a Python API: the model of a frozen generator, and `upsample`.

Find a latent of a frozen generator whose image, downscaled bicubically, matches a low-resolution
input. The search itself is search.py's; its settings, with the 2020 defaults, settings.py's.

    import PULSE
    model = PULSE.load(cache_dir="cache")            # the generator, as run.py finds it
    results = model.upsample("input/face.png", seed=0, steps=100)
    results[0].image.save("face_hr.png")             # the best image; see Result for the rest

A network built in Python is searched through `PULSE.from_generator(network, prior)` (see
generators/generator.py for what it must answer, and docs/generators.md).
"""
import logging
import sys
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
logger = logging.getLogger("pulse")

if __name__ != "PULSE" and not any(Path(entry or ".").resolve() == HERE for entry in sys.path
                                   if isinstance(entry, str)):  # vendored: imported as gitmodules.pulse.PULSE
    sys.path.append(str(HERE))  # for its own modules' plain names; last, so that a module they would hide is named

import own_modules  # noqa: E402 (after the path it is found on)

try:
    from runkit import cpu_threads, inputs, speed
    from device import pick_device
    from generators.generator import Generator, Prior, missing_members
    from parsed_text import NoiseLayerError
    from runkit.image_tensors import to_pil
    from search import Result, Row, Step, search_jobs
    from settings import ComputeOptions, JobSettings, ModelOptions, RECIPES, SearchConfig, recipe_config
    from runkit.inputs import Input
    from runkit.options import from_keywords, takes_options
    from weightfiles.weight_sources import weights_folder
    from weightfiles.weights import load_generator
except ImportError as e:  # from another folder: the README's Python section says how
    if own_modules.shadowing(e) is None:
        raise
    raise ImportError(own_modules.shadowing(e)) from e

for clash in own_modules.hidden_modules():
    warnings.warn(clash, stacklevel=2)

# The API: the model and its loaders; what upsample takes (an Input names its results, the settings)
# and hands out (a Result per image and duplicate; a Step, with a Row per search, to on_step).
__all__ = ["PULSE", "load", "from_generator", "Input", "SearchConfig", "RECIPES", "recipe_config", "JobSettings",
           "ModelOptions", "ComputeOptions", "Result", "Step", "Row"]


class PULSE(torch.nn.Module):
    """The model (its 2020 name: `from PULSE import PULSE`): the frozen synthesis network and its
    prior. `upsample` runs PULSE on images (the Python API over search.search_jobs, which run.py
    calls on its folder), `render` draws a latent.

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
    def build(cls, synthesis, prior, device, precision="fp32", fast_ops=True, compile=False):
        """The model for a search: the one place that decides its device, dtype, autocast, fast path
        and compilation (`load`, `from_generator`, run.py and bench.py all build through it), and the
        CPU threads where the process has not chosen them (cpu_threads.set_default).

        `fast_ops` computes the tensors derived from the frozen weights once, on the device, in the
        model's dtype (see generators/fastops.py); `compile` runs torch.compile on either path."""
        model_dtype, autocast_dtype = speed.precision_dtypes(precision, device)
        cpu_threads.set_default()
        model = cls(synthesis, prior, autocast_dtype).to(device, model_dtype)
        model.precision, model.compiled = precision, compile
        model.synthesis.set_fast(fast_ops)
        if compile:
            model.synthesis = torch.compile(model.synthesis)
        return model

    @classmethod
    def of_options(cls, synthesis, prior, device, compute):
        """The model built as ComputeOptions `compute` say (`speedups`: the fast ops; the freed memory
        is the process's, folder_run.start_process)."""
        return cls.build(synthesis, prior, device, compute.precision, fast_ops=compute.speedups, compile=compute.compile)

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

    def generate(self, latent, noise):
        """(latent_in, image in [0, 1]) for search latents [B, rows, width] (see generator.Prior)."""
        latent_in = self.prior(latent)
        with torch.autocast(latent_in.device.type, self.autocast_dtype, enabled=self.autocast_dtype is not None):
            image = self.synthesis(latent_in, noise)
        return latent_in, (image.to(latent_in.dtype) + 1) / 2

    @takes_options(SearchConfig)
    def upsample(self, images, seed=None, duplicates=1, batch_size=1, on_step=None, **settings):
        """PULSE on low-resolution faces: a list of Results, one per image and duplicate, in order.

        `images`: a path, a PIL image, a [3, r, r] or [B, 3, r, r] tensor in [0, 1], an Input (an
        image with the name its results take), or a list of these. `seed`, `duplicates` and
        `batch_size` are JobSettings's, as run.py's flags: `seed` is the first duplicate's (duplicate
        k uses seed + k - 1, and its try t seed + k - 1 + (t - 1) * duplicates; drawn at random when
        None, and kept in each Result). `on_step(Step)` is called after each step's losses. The
        search settings (below) are SearchConfig's fields: run.py's search flags, same names and
        defaults; `recipe` ("2020" or "converge", see RECIPES) sets some of them first, and those
        given here beat its values. An unusable image or argument raises ValueError naming it,
        before any search; a setting name SearchConfig does not have, a TypeError listing them.
        Ctrl-C (or a KeyboardInterrupt from `on_step`) returns the results so far, the stopped
        searches' marked `interrupted`.
        """
        config = recipe_config(**settings)
        self.check_noise_layers(config)  # with the other arguments, before the images are read
        job_settings = JobSettings(seed, duplicates, batch_size)
        job_settings.check_seeds(config.tries)
        if on_step is not None and not callable(on_step):
            raise ValueError(f"on_step must be a function of one Step, or None; got {on_step!r}")
        named = inputs.named_inputs(images, self.resolution)
        jobs = inputs.make_jobs(named, inputs.draw_seed() if seed is None else seed, duplicates)
        results = {}
        try:
            search_jobs(self, jobs, config, lambda job, result: results.update({id(job): result}), batch_size, on_step)
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
    model = PULSE.of_options(synthesis, prior, device, options)
    model.note = model_note(folder, synthesis.resolution)
    if model.note:
        logger.info(f"note: {model.note}")
    return model


@takes_options(ComputeOptions)
def from_generator(network, prior, device=None, **compute):
    """The PULSE model of a generator built in Python, nothing read or written on disk: `network` a
    torch module answering generator.Generator, `prior` a generator.Prior (SphereOfZ(nz) for a
    network fed z itself, MappedGaussian(fit, num_ws) for a StyleGAN). `device` as for `load`, the
    options below as ComputeOptions declares them; TypeError naming what the network or the prior
    lacks."""
    compute = from_keywords(ComputeOptions, compute, "compute option")
    for thing, protocol in ((network, Generator), (prior, Prior)):
        missing = missing_members(thing, protocol)
        if missing or not isinstance(thing, torch.nn.Module):
            raise TypeError(f"{type(thing).__name__} is not a torch module answering generator.{protocol.__name__}"
                            f"{': it lacks ' + ', '.join(missing) if missing else ''}")
    return PULSE.of_options(network, prior, pick_device(device), compute)


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


