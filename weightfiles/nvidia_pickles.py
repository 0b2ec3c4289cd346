"""Reading NVIDIA's network pickles without running any code from them.

A pickle can run arbitrary code while it loads, and NVIDIA's network pickles even carry the Python
source of their networks. Both formats are read by unpicklers that know only the handful of
globals such a file names, each mapped to a harmless stand-in; anything else stops the load
before it runs, with a WeightsError.

- StyleGAN-1 (TensorFlow, `karras2019stylegan-*.pkl`): a (G, D, Gs) tuple of
  `dnnlib.tflib.network.Network` objects holding numpy arrays.
- stylegan2-ada-pytorch and stylegan3 (its StyleGAN3 configs T and R and its StyleGAN2 one): a
  dict with `G`, `D`, `G_ema`, `augment_pipe`, `training_set_kwargs` of `torch_utils.persistence`
  objects. Both codes write the same container with the same globals (a StyleGAN3 network adds
  only numpy arrays and scalars to its modules' state), so one allowlist serves both. Each
  object is stored as `_reconstruct_persistent_obj(meta)`, `meta` holding the class's source
  (`module_src`, never run), its name and its state (the module's `__dict__`); tensors come from
  storages that are nested `torch.save` blobs, loaded here with `torch.load(..., weights_only=True)`.
"""
import io
import pickle
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch._utils

from errors import WeightsError

try:  # numpy >= 2 moved the module that rebuilds pickled arrays; old pickles name the old one
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray


class NetworkStandIn:
    """Takes the place of dnnlib.tflib.network.Network: keeps the pickled state, runs nothing."""
    state = None  # stays None if the pickle never hands over a state

    def __setstate__(self, state):
        self.state = state


class EasyDictStandIn(dict):
    """Takes the place of dnnlib.util.EasyDict (a plain dict subclass)."""


@dataclass
class PersistentObject:
    """Takes the place of a torch_utils.persistence object: its class name and state only."""
    class_name: str
    state: dict


def persistent_object(meta):
    """Stand-in for `_reconstruct_persistent_obj(meta)`: keeps the state, ignores `module_src`."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise WeightsError("a persistent object in the pickle is not a stored class instance")
    return PersistentObject(str(meta.get("class_name")), meta["state"])


def storage_from_bytes(data):
    """Stand-in for `torch.storage._load_from_bytes`: the nested torch.save blob, weights only."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """Stand-in for `torch._utils._rebuild_parameter`: the plain tensor (no hooks, no grad)."""
    return data


def rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """`torch._utils._rebuild_tensor_v2` without the gradient flag and hooks."""
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, False, OrderedDict())


NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
COMMON_GLOBALS = {
    **NUMPY_GLOBALS,
    ("dnnlib.util", "EasyDict"): EasyDictStandIn,
    ("dnnlib", "EasyDict"): EasyDictStandIn,
    ("collections", "OrderedDict"): OrderedDict,
}
STYLEGAN1_GLOBALS = {**COMMON_GLOBALS, ("dnnlib.tflib.network", "Network"): NetworkStandIn}
STYLEGAN2_GLOBALS = {
    **COMMON_GLOBALS,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): persistent_object,
    ("torch.storage", "_load_from_bytes"): storage_from_bytes,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("builtins", "set"): set,  # a module's _non_persistent_buffers_set, in pickle protocols < 4
}
# Either format: what `read` accepts before it knows which one it has.
ALLOWED_GLOBALS = {**STYLEGAN1_GLOBALS, **STYLEGAN2_GLOBALS}


class AllowlistUnpickler(pickle.Unpickler):
    """Resolves only the globals in `allowed` (to their stand-ins); refuses every other one."""

    def __init__(self, file, allowed=ALLOWED_GLOBALS, **kwargs):
        super().__init__(file, **kwargs)
        self.allowed = allowed

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise WeightsError(
                f"refusing to load {module}.{name} from the pickle: an NVIDIA network pickle holds only "
                f"networks, tensors and numpy arrays, so this file is either not one or has been tampered with"
            ) from None


def read(path):
    """The object in the network pickle at `path` (either format), with stand-ins; WeightsError otherwise."""
    with open(path, "rb") as f:
        try:
            return AllowlistUnpickler(f, encoding="latin1").load()
        except WeightsError:
            raise
        except Exception as e:  # a damaged pickle can fail in many ways; all mean the same to the user
            raise WeightsError(
                f"{path} could not be read as a pickle (truncated or damaged?): {type(e).__name__}: {e}") from e


def is_pytorch_snapshot(data):
    """Whether `data` (from `read`) is a snapshot of NVIDIA's PyTorch code: a dict with a persistent G_ema."""
    return isinstance(data, dict) and isinstance(data.get("G_ema"), PersistentObject)


def is_stylegan3_pickle(data):
    """A PyTorch snapshot whose G_ema is a StyleGAN3 (its synthesis starts from Fourier features)."""
    features = submodule(data["G_ema"], "synthesis.input") if is_pytorch_snapshot(data) else None
    return isinstance(features, PersistentObject) and features.class_name == "SynthesisInput"


def is_stylegan2_pickle(data):
    """A PyTorch snapshot of a StyleGAN2 (stylegan2-ada-pytorch's, or stylegan3's StyleGAN2 config)."""
    return is_pytorch_snapshot(data) and not is_stylegan3_pickle(data)


def module_tensors(obj, prefix=""):
    """{name: tensor} of a persistent torch module and its submodules, as its state_dict names them."""
    state = obj.state
    tensors = {}
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in non_persistent):
                continue
            if not isinstance(value, torch.Tensor):
                raise WeightsError(f"{prefix}{name} in the pickle is not a tensor")
            tensors[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise WeightsError(f"{prefix}{name} in the pickle is not a persistent module")
        tensors.update(module_tensors(child, f"{prefix}{name}."))
    return tensors


def named_modules(obj, prefix=""):
    """(dotted path, persistent object) of `obj` and every persistent submodule, depth first."""
    yield prefix, obj
    for name, child in (obj.state.get("_modules") or {}).items():
        if isinstance(child, PersistentObject):
            yield from named_modules(child, f"{prefix}.{name}" if prefix else name)


def submodule(obj, path):
    """The persistent submodule at dotted `path` (e.g. 'synthesis.b4.conv1'), or None."""
    for name in path.split("."):
        obj = (obj.state.get("_modules") or {}).get(name) if isinstance(obj, PersistentObject) else None
    return obj
