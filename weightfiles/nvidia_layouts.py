"""NVIDIA's pickled networks as the state dicts this port loads, read without NVIDIA's code.

Each reader takes what nvidia_pickles.read returns and gives (synthesis state, mapping state,
attributes): the tensors under this port's names, and the numbers the state dicts do not hold.
families.py says which reader fits which pickle and builds the networks.

- StyleGAN-1 (TensorFlow): Gs's variables renamed to the 2020 PyTorch layout and transposed from
  TensorFlow's [k, k, in, out] / [in, out] to PyTorch's [out, in, k, k] / [out, in].
- stylegan2-ada-pytorch: G_ema's tensors under NVIDIA's own names, after checking that it computes
  only what generators/stylegan2.py computes.
- stylegan3 (configs T and R): the same for generators/stylegan3.py, and each layer's resampling attributes.
"""
import re

import numpy as np
import torch

from weightfiles import nvidia_pickles
from generators import stylegan3
from stylegan import Blur
from errors import WeightsError
from weightfiles.nvidia_pickles import NetworkStandIn


def describe(obj):
    if isinstance(obj, (tuple, list, dict)):
        return f"a {type(obj).__name__} of length {len(obj)}"
    return f"a {type(obj).__name__}"


def stylegan1_gs(data):
    """Gs, the averaged generator PULSE uses, from NVIDIA's (G, D, Gs) tuple (or a dict, or Gs alone)."""
    if isinstance(data, (tuple, list)) and len(data) == 3:
        return data[2]
    if isinstance(data, dict) and "Gs" in data:
        return data["Gs"]
    return data


def is_stylegan1_pickle(data):
    return isinstance(stylegan1_gs(data), NetworkStandIn)


def network_variables(state, what):
    """The variables of one pickled network as {name relative to the network: float array}."""
    try:
        pairs = list(state["variables"])
        arrays = {str(name): np.asarray(value) for name, value in pairs}
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"the {what} network in the pickle has no readable variable list ({e})") from e
    not_float = [name for name, value in arrays.items() if value.dtype.kind != "f"]
    if not_float:
        raise WeightsError(f"the {what} network holds non-float variables: {', '.join(not_float[:5])}")
    return arrays


def component_variables(gs_state, name):
    components = gs_state.get("components") if isinstance(gs_state, dict) else None
    if not isinstance(components, dict) or not isinstance(components.get(name), NetworkStandIn):
        raise WeightsError(f"Gs in the pickle has no '{name}' network; is this a StyleGAN-1 pickle?")
    return network_variables(components[name].state, name)


def tensor(array):
    """A float32 tensor owning a copy of `array` (pickled arrays may be read-only views)."""
    return torch.from_numpy(np.array(array, dtype=np.float32))


def conv_weight_from_tf(array):
    """TF conv weights are [k, k, in, out]; PyTorch wants [out, in, k, k] (the fused upscale conv too)."""
    return tensor(array).permute(3, 2, 0, 1).contiguous()


def dense_weight_from_tf(array):
    """TF dense weights are [in, out]; PyTorch's are [out, in]."""
    return tensor(array).t().contiguous()


TF_LAYERS = {  # TF scope inside a block -> (PyTorch conv module, epilogue after it)
    "Const": (None, "epi1"),
    "Conv": ("conv", "epi2"),
    "Conv0_up": ("conv0_up", "epi1"),
    "Conv1": ("conv1", "epi2"),
}
SYNTHESIS_VARIABLE = re.compile(r"(?P<block>\d+x\d+)/(?P<layer>\w+)/(?P<param>.+)")
SYNTHESIS_UNUSED = re.compile(r"lod|noise\d+|ToRGB_lod[1-9]\d*/(weight|bias)")  # PULSE only draws at full size


def synthesis_key(tf_name):
    """(PyTorch key, converter) for a synthesis variable PULSE uses, else None."""
    if tf_name == "ToRGB_lod0/weight":
        return "torgb.weight", conv_weight_from_tf
    if tf_name == "ToRGB_lod0/bias":
        return "torgb.bias", tensor
    match = SYNTHESIS_VARIABLE.fullmatch(tf_name)
    if not match or match["layer"] not in TF_LAYERS:
        return None
    conv, epilogue = TF_LAYERS[match["layer"]]
    block, param = f"blocks.{match['block']}", match["param"]
    if param == "Noise/weight":
        return f"{block}.{epilogue}.noise.weight", tensor
    if param == "StyleMod/weight":
        return f"{block}.{epilogue}.style_mod.lin.weight", dense_weight_from_tf
    if param == "StyleMod/bias":
        return f"{block}.{epilogue}.style_mod.lin.bias", tensor
    if conv is None:  # the Const scope: the learned input and the bias added to it
        return (f"{block}.{param}", tensor) if param in ("const", "bias") else None
    if param == "weight":
        return f"{block}.{conv}.weight", conv_weight_from_tf
    return (f"{block}.{conv}.bias", tensor) if param == "bias" else None


def check_all_used(leftover, what):
    if leftover:
        raise WeightsError(f"unexpected variables in the {what} network (not the architecture this port "
                           f"computes): {', '.join(sorted(leftover)[:8])}")


def convert_synthesis(variables):
    """The 2020 synthesis state dict from the TF variables."""
    converted, leftover = {}, []
    for tf_name, array in variables.items():
        target = synthesis_key(tf_name)
        if target:
            key, to_torch = target
            converted[key] = to_torch(array)
        elif not SYNTHESIS_UNUSED.fullmatch(tf_name):
            leftover.append(tf_name)
    check_all_used(leftover, "synthesis")
    # The blur after each upscaling conv is a fixed buffer in the 2020 layout, not a variable.
    blur = Blur(1).kernel
    for key in [key for key in converted if key.endswith(".conv0_up.weight")]:
        converted[key.removesuffix("weight") + "intermediate.kernel"] = blur.clone()
    return converted


def convert_mapping(variables):
    converted, leftover = {}, []
    for tf_name, array in variables.items():
        match = re.fullmatch(r"Dense(\d+)/(weight|bias)", tf_name)
        if match is None:
            leftover.append(tf_name)
            continue
        converted[f"dense{match[1]}.{match[2]}"] = dense_weight_from_tf(array) if match[2] == "weight" else tensor(array)
    check_all_used(leftover, "mapping")
    return converted


def stylegan1_states(data, source):
    """(synthesis state, mapping state, no attributes) of a StyleGAN-1 (TensorFlow) pickle's Gs."""
    gs = stylegan1_gs(data)
    if not isinstance(gs, NetworkStandIn):
        raise WeightsError(f"{source} is not a StyleGAN-1 network pickle: expected NVIDIA's "
                           f"(G, D, Gs) tuple of networks, found {describe(data)}")
    return (convert_synthesis(component_variables(gs.state, "synthesis")),
            convert_mapping(component_variables(gs.state, "mapping")), {})


ACTIVATIONS = {"FullyConnectedLayer": "lrelu", "SynthesisLayer": "lrelu", "Conv2dLayer": "linear"}


def stylegan2_attribute(g_ema, path, name):
    module = nvidia_pickles.submodule(g_ema, path)
    if module is None or name not in module.state:
        raise WeightsError(f"G_ema in the pickle has no {path}.{name}; is this a StyleGAN2 or StyleGAN3 generator?")
    return module.state[name]


def check_stylegan2_layers(g_ema, activations=ACTIVATIONS):
    """Refuse what this port does not compute: labels, other activations or layer types."""
    if int(g_ema.state.get("c_dim", 0) or 0):
        raise WeightsError("G_ema is a conditional generator (c_dim > 0); PULSE needs an unconditional one")
    for path, module in nvidia_pickles.named_modules(g_ema):
        expected = "linear" if path.endswith("affine") else activations.get(module.class_name)
        if expected and module.state.get("activation") != expected:
            raise WeightsError(f"G_ema.{path} uses activation {module.state.get('activation')!r}, "
                               f"this port computes {expected!r}")


def stylegan2_states(data, source):
    """(synthesis state, mapping state, attributes) of a stylegan2-ada-pytorch pickle's G_ema: NVIDIA's
    names, float32 tensors, and the two numbers the state dicts do not hold (conv_clamp, the
    mapping's lr_multiplier)."""
    g_ema = data["G_ema"]
    check_stylegan2_layers(g_ema)
    states = g_ema_states(g_ema)
    conv_clamp = stylegan2_attribute(g_ema, "synthesis.b4.conv1", "conv_clamp")
    attributes = {"conv_clamp": None if conv_clamp is None else float(conv_clamp),
                  "mapping_lr_multiplier": mapping_lr_multiplier(g_ema)}
    return states["synthesis"], states["mapping"], attributes


def g_ema_states(g_ema):
    """{"synthesis": state, "mapping": state} of a PyTorch G_ema: NVIDIA's names, float32 tensors."""
    tensors = nvidia_pickles.module_tensors(g_ema)
    states = {part: {key[len(part) + 1:]: value.float().contiguous() for key, value in tensors.items()
                     if key.startswith(part + ".")} for part in ("synthesis", "mapping")}
    check_all_used([key for key in tensors if key.split(".")[0] not in states], "G_ema")
    return states


def mapping_lr_multiplier(g_ema):
    return float(stylegan2_attribute(g_ema, "mapping.fc0", "bias_gain"))


def stylegan3_states(data, source):
    """(synthesis state, mapping state, attributes) of a stylegan3 pickle's G_ema (config T or R):
    NVIDIA's names, float32 tensors, and what the state dicts do not hold: each layer's resampling
    (stylegan3.attributes_of_pickle) and the mapping's lr_multiplier."""
    g_ema = data["G_ema"]
    # A StyleGAN3 SynthesisLayer names no activation: it is always filtered_lrelu's leaky ReLU.
    check_stylegan2_layers(g_ema, {"FullyConnectedLayer": "lrelu"})
    states = g_ema_states(g_ema)
    try:
        synthesis = stylegan3.attributes_of_pickle(nvidia_pickles.submodule(g_ema, "synthesis").state)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise WeightsError(f"G_ema.synthesis in {source} is not a StyleGAN3 synthesis network this port "
                           f"runs ({type(e).__name__}: {e})") from e
    return states["synthesis"], states["mapping"], {"synthesis": synthesis,
                                                    "mapping_lr_multiplier": mapping_lr_multiplier(g_ema)}
