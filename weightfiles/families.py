"""The generator families this port runs, each answering for itself in one place: FAMILIES.

A Family says how to recognise its network file by its content, how to read the state dicts out of
it, how to build its networks from state dicts and attributes (the numbers a state dict does not
hold, such as StyleGAN2's conv_clamp), under which prior PULSE searches it (generator.Prior: how a
search latent becomes the network's input) and whether that prior takes a gaussian fit
(`needs_fit`). A cache folder's generator.json names its family by its key here (weights.py); a
folder without one holds the 2020 files, of the family DEFAULT. The rest of the project asks
these entries: every list of families in a help text is made from FAMILIES, and
tests/test_families.py holds docs/generators.md's table and the -network help to it.

To add a family (generators/dcgan.py is the smallest example):
1. One module in generators/ with its synthesis network, implementing generator.Generator (resolution, num_ws,
   dlatent_size, noise_sizes, default_bad_noise_layers, set_fast, forward(latent_in, noise)),
   a `synthesis_from_state_dict` that reads the architecture from the tensors' shapes, and its
   reader: a test that a read file (a torch_files.TorchFile, or what nvidia_pickles.read gives)
   is of the family, and `states(file, source)` -> (synthesis state, mapping state, attributes).
   The DCGAN's reader lives beside its network; the readers of NVIDIA's pickles
   (weightfiles/nvidia_layouts.py) and of rosinality's checkpoints (weightfiles/rosinality_checkpoints.py)
   live in weightfiles/, beside the safe unpicklers they share.
2. Its prior: generator.MappedGaussian for a network behind a mapping network (the gaussian fit
   of its mapping is made at conversion and kept as gaussian_fit.pt), generator.SphereOfZ for
   one fed z itself (no mapping, no fit), or a new generator.Prior.
3. One entry in FAMILIES, and a sample file of it in tests/network_files.py (SAMPLES), which
   tests/test_families.py puts through the contract every family keeps. The cache format,
   convert_weights.py, -network, the search, run.py, the page and bench.py (through `untrained`)
   need no change; docs/generators.md gets a row.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from weightfiles import nvidia_layouts, nvidia_pickles, releases, rosinality_checkpoints, torch_files
import stylegan
from generators import dcgan, rosinality, stylegan2, stylegan3
from generators.generator import MappedGaussian, SphereOfZ
from errors import WeightsError

States = tuple[dict, dict, dict]  # (synthesis state dict, mapping state dict, attributes)
BUNDLED_FIT = Path(__file__).resolve().parent.parent / "gaussian_fit.pt"  # the 2020 fit of FFHQ, at the repository root


@dataclass(frozen=True)
class Family:
    title: str  # how messages name it
    files: str  # what its network files are, for help texts
    recognises: Callable[[Any], bool]  # whether a read network file (conversion.read_network) is of this family
    read: Callable[[Any, str], States]  # that file's object and its name -> its states
    synthesis: Callable[[dict, dict], nn.Module]  # (state dict, attributes) -> an untrained network of that shape
    mapping: Callable[[dict, dict], nn.Module] | None  # the same for its mapping network; None: it has none
    prior: Callable[[nn.Module, dict | None], nn.Module]  # (synthesis, gaussian fit or None) -> its generator.Prior
    # resolution (None: as published) -> its published architecture with random weights (bench.py)
    untrained: Callable[[int | None], nn.Module] | None = None
    # a release of NVIDIA's (releases.NVIDIA_PICKLES) -> the fit shipped for that very network, taken as
    # it is instead of fitting one
    bundled_fits: dict[str, Path] = field(default_factory=dict)

    @property
    def needs_fit(self):
        """Whether its prior takes a gaussian fit: a network behind a mapping network is searched where
        that mapping's outputs lie (the fit of it, made at conversion); one fed z itself is not."""
        return self.mapping is not None

    def bundled_fit(self, md5):
        """The fit shipped for the network file whose MD5 is `md5` (bundled_fits), or None."""
        return next((fit for release, fit in self.bundled_fits.items()
                     if releases.NVIDIA_PICKLES[release].md5 == md5), None)


def in_torch_file(test):
    """A `recognises` for a family whose files torch.save wrote: `test` on what the file holds."""
    return lambda file: isinstance(file, torch_files.TorchFile) and test(file.data)


def mapped_gaussian(synthesis, fit):
    return MappedGaussian(fit, synthesis.num_ws)


FAMILIES = {
    "stylegan1": Family("StyleGAN-1",
                        "NVIDIA's StyleGAN-1 (TensorFlow) pickle, (G, D, Gs) (karras2019stylegan-ffhq-1024x1024.pkl)",
                        nvidia_layouts.is_stylegan1_pickle, nvidia_layouts.stylegan1_states,
                        synthesis=lambda state, attributes: stylegan.synthesis_from_state_dict(state),
                        mapping=lambda state, attributes: stylegan.G_mapping(),
                        prior=mapped_gaussian,
                        untrained=lambda resolution: stylegan.G_synthesis(resolution=resolution or 1024),
                        # The bundled file is the 2020 fit of exactly this network: with its bits,
                        # runs reproduce the 2020 results instead of a fit that differs in the last digits.
                        bundled_fits={"ffhq": BUNDLED_FIT}),
    "stylegan2": Family("StyleGAN2",
                        "a stylegan2-ada-pytorch pickle or stylegan3's StyleGAN2, a dict with G_ema (ffhq.pkl)",
                        nvidia_pickles.is_stylegan2_pickle, nvidia_layouts.stylegan2_states,
                        synthesis=lambda state, attributes: stylegan2.synthesis_from_state_dict(
                            state, attributes["conv_clamp"]),
                        mapping=lambda state, attributes: stylegan2.mapping_from_state_dict(
                            state, attributes["mapping_lr_multiplier"]),
                        prior=mapped_gaussian,
                        untrained=lambda resolution: stylegan2.SynthesisNetwork(
                            stylegan2.nvidia_block_channels(resolution or 1024))),
    "stylegan3": Family("StyleGAN3",
                        "a stylegan3 pickle of config T or R, a dict with G_ema (stylegan3-t-ffhq-1024x1024.pkl)",
                        nvidia_pickles.is_stylegan3_pickle, nvidia_layouts.stylegan3_states,
                        synthesis=lambda state, attributes: stylegan3.synthesis_from_state_dict(
                            state, attributes["synthesis"]),
                        mapping=lambda state, attributes: stylegan2.mapping_from_state_dict(  # StyleGAN2's
                            state, attributes["mapping_lr_multiplier"]),
                        prior=mapped_gaussian),
    "rosinality": Family("rosinality StyleGAN2",
                         "a rosinality/stylegan2-pytorch checkpoint, with g_ema (550000.pt)",
                         in_torch_file(rosinality_checkpoints.is_checkpoint), rosinality_checkpoints.states,
                         synthesis=lambda state, attributes: rosinality.synthesis_from_state_dict(state),
                         mapping=lambda state, attributes: rosinality.mapping_from_state_dict(state),
                         prior=mapped_gaussian),
    "dcgan": Family("DCGAN",
                    "a torch.save file (.pt, .pth, .tar) of the PyTorch DCGAN tutorial's generator state dict, "
                    "main.N.*, bare or as netG_state_dict (netG.pth)",
                    in_torch_file(dcgan.is_dcgan_file), dcgan.states,
                    synthesis=lambda state, attributes: dcgan.synthesis_from_state_dict(state),
                    mapping=None,
                    prior=lambda synthesis, fit: SphereOfZ(synthesis.dlatent_size),
                    untrained=lambda resolution: dcgan.tutorial(resolution or 64)),
}
DEFAULT = "stylegan1"  # the 2020 family: of a folder without generator.json, and of a pickle no family recognises


def files_in_words():
    """The network files of every family, in one phrase, for help texts."""
    kinds = [f.files for f in FAMILIES.values()]
    return "; ".join(kinds[:-1]) + "; or " + kinds[-1]


def family(name):
    """FAMILIES[name]; WeightsError for a name this version does not know (a cache from a newer one)."""
    if name not in FAMILIES:
        raise WeightsError(f"unknown generator family {name!r} (this version knows {', '.join(FAMILIES)})")
    return FAMILIES[name]


def family_of(network_file):
    """The name of the family whose file `network_file` (conversion.read_network's object) is.

    A pickle that no family recognises is read as the 2020 family's, whose reader says what is wrong
    with it; a torch.save file that none recognises is refused here, naming what it holds."""
    name = next((name for name, candidate in FAMILIES.items() if candidate.recognises(network_file)), None)
    if name is None and isinstance(network_file, torch_files.TorchFile):
        raise WeightsError(f"{network_file.path} holds {torch_files.describe(network_file.data)}, which is no "
                           f"network file of the families this port reads "
                           f"({', '.join(f.title for f in FAMILIES.values())})")
    return name or DEFAULT


def build(name, part, state, attributes, source):
    """Family `name`'s `part` network ("synthesis" or "mapping") holding `state`, frozen for inference;
    WeightsError naming `source` when the state does not fit."""
    chosen = family(name)
    try:
        network = getattr(chosen, part)(state, attributes)
        network.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise WeightsError(f"{source} is not a {chosen.title} {part} network this port can run: "
                           f"{str(e).strip().splitlines()[0]}") from e
    return network.eval().requires_grad_(False)
