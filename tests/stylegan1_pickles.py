"""Tiny network pickles laid out like NVIDIA's StyleGAN-1 release, for the tests.

They are built from small random PyTorch generators, turned into TensorFlow's variable names
and layouts by this file's own (deliberately plain) inverse mapping, and pickled through
stand-in `dnnlib` modules so they name the same classes as the real file.
"""
import pickle
import sys
import types
from unittest import mock

import numpy as np
import torch

from stylegan import G_mapping, G_synthesis


class Network:
    """Pickles the way dnnlib.tflib.network.Network does: as its __getstate__ dict."""
    __module__ = "dnnlib.tflib.network"

    def __init__(self, name, variables, components=None, static_kwargs=None, build_module_src=""):
        self.state = dict(version=3, name=name, static_kwargs=static_kwargs or {},
                          components=components or {}, build_module_src=build_module_src,
                          build_func_name=name, variables=variables)

    def __getstate__(self):
        return self.state


class EasyDict(dict):
    __module__ = "dnnlib.util"


def fake_dnnlib_modules():
    modules = {name: types.ModuleType(name) for name in
               ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network", "dnnlib.util")}
    modules["dnnlib.tflib.network"].Network = Network
    modules["dnnlib.util"].EasyDict = EasyDict
    return modules


def dumps(obj):
    """Pickle like NVIDIA did (protocol 4, the highest of Python 3.6), naming dnnlib's classes."""
    with mock.patch.dict(sys.modules, fake_dnnlib_modules()):
        return pickle.dumps(obj, protocol=4)


def dump(obj, path):
    path.write_bytes(dumps(obj))
    return path


# --- the test's own PyTorch -> TensorFlow mapping ---------------------------------------------

def tf_conv(w):
    return w.permute(2, 3, 1, 0).numpy().copy()  # [out, in, k, k] -> [k, k, in, out]


def tf_dense(w):
    return w.t().numpy().copy()  # [out, in] -> [in, out]


def tf_synthesis_variables(model):
    s = {k: v.detach() for k, v in model.state_dict().items()}

    def conv(scope, module):
        return [(f"{scope}/weight", tf_conv(s[f"{module}.weight"])), (f"{scope}/bias", s[f"{module}.bias"].numpy())]

    def epilogue(scope, epi):
        return [(f"{scope}/Noise/weight", s[f"{epi}.noise.weight"].numpy()),
                (f"{scope}/StyleMod/weight", tf_dense(s[f"{epi}.style_mod.lin.weight"])),
                (f"{scope}/StyleMod/bias", s[f"{epi}.style_mod.lin.bias"].numpy())]

    variables = [("lod", np.float32(0)),
                 ("4x4/Const/const", s["blocks.4x4.const"].numpy()), ("4x4/Const/bias", s["blocks.4x4.bias"].numpy())]
    variables += epilogue("4x4/Const", "blocks.4x4.epi1")
    variables += conv("4x4/Conv", "blocks.4x4.conv") + epilogue("4x4/Conv", "blocks.4x4.epi2")
    for res in list(model.blocks)[1:]:
        variables += conv(f"{res}/Conv0_up", f"blocks.{res}.conv0_up") + epilogue(f"{res}/Conv0_up", f"blocks.{res}.epi1")
        variables += conv(f"{res}/Conv1", f"blocks.{res}.conv1") + epilogue(f"{res}/Conv1", f"blocks.{res}.epi2")
    variables += conv("ToRGB_lod0", "torgb")
    return variables + unused_synthesis_variables(model)


def unused_synthesis_variables(model):
    """What the real file also holds and PULSE ignores: low-resolution ToRGBs, stored noise maps."""
    rng = np.random.default_rng(1)
    variables = []
    for lod, block in enumerate(reversed(list(model.blocks.values())[:-1]), start=1):
        channels = block.epi2.noise.weight.numel()
        variables += [(f"ToRGB_lod{lod}/weight", rng.standard_normal((1, 1, channels, 3), dtype=np.float32)),
                      (f"ToRGB_lod{lod}/bias", rng.standard_normal(3, dtype=np.float32))]
    for layer in range(model.num_layers):
        size = 2 ** (layer // 2 + 2)
        variables.append((f"noise{layer}", rng.standard_normal((1, 1, size, size), dtype=np.float32)))
    return variables


def tf_mapping_variables(model):
    s = model.state_dict()
    return [(f"Dense{i}/{p}", tf_dense(s[f"dense{i}.weight"]) if p == "weight" else s[f"dense{i}.bias"].numpy())
            for i in range(8) for p in ("weight", "bias")]


def randomised(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # noise weights, biases and the constant included
            p.copy_(torch.randn_like(p))
    return model.eval()


def nvidia_tuple(synthesis, mapping, build_module_src=""):
    """(G, D, Gs) as in NVIDIA's file; G differs from Gs so picking the wrong one shows."""
    def generator(name, sign):
        syn = Network("G_synthesis", [(n, sign * v) for n, v in tf_synthesis_variables(synthesis)],
                      static_kwargs=EasyDict(resolution=synthesis.resolution), build_module_src=build_module_src)
        mapn = Network("G_mapping", [(n, sign * v) for n, v in tf_mapping_variables(mapping)],
                       static_kwargs={"dlatent_broadcast": synthesis.num_layers})
        return Network(name, [("lod", np.float32(0)), ("dlatent_avg", np.zeros(512, np.float32))],
                       components={"synthesis": syn, "mapping": mapn}, build_module_src=build_module_src)

    D = Network("D", [("4x4/Dense1/weight", np.ones((16, 1), np.float32))])
    return generator("G", -1), D, generator("Gs", 1)


def tiny_pickle_bytes(resolution=32, seed=3):
    """A small NVIDIA-format pickle: a random synthesis network of `resolution` and a random mapping."""
    synthesis = randomised(G_synthesis(resolution=resolution, fmap_base=64, fmap_max=16), seed=seed)
    return dumps(nvidia_tuple(synthesis, randomised(G_mapping(), seed=seed + 1)))
