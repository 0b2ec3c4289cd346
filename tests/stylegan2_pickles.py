"""Small StyleGAN2 networks pickled as NVIDIA's stylegan2-ada-pytorch snapshots, for the tests.

Every network is a `torch_utils.persistence._reconstruct_persistent_obj(meta)` record holding the
module's state, built from this port's own generator with a seeded random init, and tensors
pickle as PyTorch pickles them (`_rebuild_tensor_v2` of a `_load_from_bytes` storage).
tests/stylegan3_networks.py pickles StyleGAN3s through the same code.
"""
import math
import pickle
import sys
import types
from unittest import mock

import numpy as np
import torch

from generators import stylegan2


NVIDIA_CLASS_NAMES = {
    stylegan2.FullyConnected: "FullyConnectedLayer", stylegan2.SynthesisLayer: "SynthesisLayer",
    stylegan2.ToRGB: "ToRGBLayer", stylegan2.SkipUp: "Conv2dLayer", stylegan2.SynthesisBlock: "SynthesisBlock",
    stylegan2.SynthesisNetwork: "SynthesisNetwork", stylegan2.MappingNetwork: "MappingNetwork",
}


def _reconstruct_persistent_obj(meta):  # only named in the pickle, never called
    raise AssertionError("the test pickler's stand-in must not run")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class Persistent:
    """Pickles as NVIDIA's persistent objects do: `_reconstruct_persistent_obj(meta)`."""

    def __init__(self, class_name, state, module_src):
        self.meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


class EasyDict(dict):
    __module__ = "dnnlib.util"


def nvidia_attributes(module):
    """The plain attributes NVIDIA's modules carry that a converter may read (numbers as numpy)."""
    if isinstance(module, stylegan2.FullyConnected):
        return dict(activation="lrelu" if module.lrelu else "linear", weight_gain=np.float64(module.weight_gain),
                    bias_gain=module.bias_gain)
    if isinstance(module, stylegan2.SynthesisLayer):
        return dict(activation="lrelu", conv_clamp=module.conv_clamp, act_gain=np.float64(math.sqrt(2)),
                    resolution=module.resolution, up=2 if module.up else 1, use_noise=True)
    if isinstance(module, stylegan2.ToRGB):
        return dict(conv_clamp=module.conv_clamp, weight_gain=np.float64(module.weight_gain))
    if isinstance(module, stylegan2.SkipUp):
        return dict(activation="linear", conv_clamp=None, up=2)
    if isinstance(module, stylegan2.SynthesisBlock):
        return dict(architecture=module.architecture, is_last=module.is_last, use_fp16=False)
    return {}


def stylegan2_description(module):
    """(NVIDIA's class name, its plain attributes) for a module of stylegan2.py."""
    return NVIDIA_CLASS_NAMES.get(type(module), "Generator"), nvidia_attributes(module)


def persistent(module, module_src, extra=None, describe=stylegan2_description):
    """`module` as NVIDIA pickles it: its parameters, buffers, submodules and the attributes
    `describe(module)` gives with its class name."""
    class_name, attributes = describe(module)
    state = {"training": False,
             "_parameters": {name: p for name, p in module._parameters.items()},
             "_buffers": {name: b for name, b in module._buffers.items()},
             "_non_persistent_buffers_set": set(),
             "_modules": {name: persistent(child, module_src, describe=describe)
                          for name, child in module._modules.items()},
             **attributes, **(extra or {})}
    return Persistent(class_name, state, module_src)


def nvidia_pickle(synthesis, mapping, module_src="", protocol=4, extra_state=None, describe=stylegan2_description):
    """Bytes of a network snapshot as NVIDIA's training loop writes it, for these networks."""
    generator = torch.nn.Module()
    generator.synthesis, generator.mapping = synthesis, mapping
    g_ema = persistent(generator, module_src,
                       {**dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=synthesis.resolution, img_channels=3,
                               num_ws=synthesis.num_ws), **(extra_state or {})}, describe)
    snapshot = dict(G=g_ema, D=None, G_ema=g_ema, augment_pipe=None,
                    training_set_kwargs=EasyDict(class_name="training.dataset.ImageFolderDataset"))
    modules = {"torch_utils": types.ModuleType("torch_utils"),
               "torch_utils.persistence": types.ModuleType("torch_utils.persistence"),
               "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": types.ModuleType("dnnlib.util")}
    modules["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    modules["dnnlib.util"].EasyDict = EasyDict
    with mock.patch.dict(sys.modules, modules):
        return pickle.dumps(snapshot, protocol=protocol)


def random_stylegan2(resolution=16, channels=16, architecture="skip", conv_clamp=None, seed=0):
    """A small StyleGAN2 with NVIDIA's init, then every bias and noise strength made non-zero."""
    torch.manual_seed(seed)
    synthesis = stylegan2.SynthesisNetwork([channels] * (int(math.log2(resolution)) - 1),
                                           architecture=architecture, conv_clamp=conv_clamp)
    mapping = stylegan2.MappingNetwork(num_layers=2)
    with torch.no_grad():
        for name, tensor in [*synthesis.named_parameters(), *mapping.named_parameters()]:
            if name.endswith("bias") or name.endswith("noise_strength"):
                tensor.add_(0.2 * torch.randn_like(tensor))
    return synthesis.eval().requires_grad_(False), mapping.eval().requires_grad_(False)

