"""The generator families this port runs, asked about in one place: FAMILIES.

Each Family says how to recognise its network pickle, how to read the state dicts out of it, and
how to build its synthesis and mapping networks from state dicts and attributes (the numbers a
state dict does not hold, such as StyleGAN2's conv_clamp). A cache folder's generator.json names
its family by its key here (weights.py); a folder without one holds the 2020 files, of the
family DEFAULT.

To add a family: write its networks (the synthesis network implements generator.Generator), a
reader from its published file to state dicts (nvidia_layouts.py has NVIDIA's two), and one entry
in FAMILIES. The cache format, convert_weights.py, -network and the search need no change. A
family whose files are not pickles adds its way of opening them to convert_weights.read_network.
"""
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from weightfiles import nvidia_layouts, nvidia_pickles, rosinality_checkpoints
import rosinality
import stylegan
import stylegan2
import stylegan3
from weightfiles.errors import WeightsError

States = tuple[dict, dict, dict]  # (synthesis state dict, mapping state dict, attributes)


@dataclass(frozen=True)
class Family:
    title: str  # how messages name it
    recognises: Callable[[Any], bool]  # whether a read network file (convert_weights.read_network) is of this family
    read: Callable[[Any, str], States]  # that file's object and its name -> its states
    synthesis: Callable[[dict, dict], nn.Module]  # (state dict, attributes) -> an untrained network of that shape
    mapping: Callable[[dict, dict], nn.Module]


FAMILIES = {
    "stylegan1": Family("StyleGAN-1", nvidia_layouts.is_stylegan1_pickle, nvidia_layouts.stylegan1_states,
                        synthesis=lambda state, attributes: stylegan.synthesis_from_state_dict(state),
                        mapping=lambda state, attributes: stylegan.G_mapping()),
    "stylegan2": Family("StyleGAN2", nvidia_pickles.is_stylegan2_pickle, nvidia_layouts.stylegan2_states,
                        synthesis=lambda state, attributes: stylegan2.synthesis_from_state_dict(
                            state, attributes["conv_clamp"]),
                        mapping=lambda state, attributes: stylegan2.mapping_from_state_dict(
                            state, attributes["mapping_lr_multiplier"])),
    "stylegan3": Family("StyleGAN3", nvidia_pickles.is_stylegan3_pickle, nvidia_layouts.stylegan3_states,
                        synthesis=lambda state, attributes: stylegan3.synthesis_from_state_dict(
                            state, attributes["synthesis"]),
                        mapping=lambda state, attributes: stylegan2.mapping_from_state_dict(  # StyleGAN2's
                            state, attributes["mapping_lr_multiplier"])),
    "rosinality": Family("rosinality StyleGAN2", lambda file: isinstance(file, rosinality_checkpoints.Checkpoint),
                         rosinality_checkpoints.states,
                         synthesis=lambda state, attributes: rosinality.synthesis_from_state_dict(state),
                         mapping=lambda state, attributes: rosinality.mapping_from_state_dict(state)),
}
DEFAULT = "stylegan1"  # the 2020 family: of a folder without generator.json, and of a pickle no family recognises


def family(name):
    """FAMILIES[name]; WeightsError for a name this version does not know (a cache from a newer one)."""
    if name not in FAMILIES:
        raise WeightsError(f"unknown generator family {name!r} (this version knows {', '.join(FAMILIES)})")
    return FAMILIES[name]


def family_of(network_file):
    """The name of the family whose file `network_file` (convert_weights.read_network's object) is.

    One that no family recognises is read as the 2020 family's, whose reader says what is wrong with it."""
    return next((name for name, candidate in FAMILIES.items() if candidate.recognises(network_file)), DEFAULT)


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
