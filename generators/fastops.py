"""The fast path shared by the generators: tensors derived from frozen weights computed once.

A module that derives tensors from its own weights (a scaled weight, a fused kernel) subclasses
FastOps and names the methods that compute them in `derived`; `set_fast(model, True)` then stores
what they return, and results that autograd does not keep are updated in place. Off (the
default), every call computes them again, as the 2020 code did. Both give bit-identical outputs.
"""
import torch
import torch.nn as nn

FROZEN = "frozen_"  # name prefix of the buffers that hold the tensors derived from frozen weights


class FastOps(nn.Module):
    """Base of the modules with a fast path; off (the default), they run the 2020 ops.

    `derived` names the methods that compute a tensor from the module's own weights alone.
    `set_fast(model, True)` stores what each returns as a non-persistent buffer `frozen_<name>`:
    state dicts are unchanged, torch.compile sees plain buffers, and the stored tensors are
    derived again after a `.to()`/`.double()` that changes the weights' dtype or device
    (converting them would not give the bits the new dtype computes) and after
    `load_state_dict`. Weights edited in place by hand need `set_fast(False)` and
    `set_fast(True)` again.
    """

    fast = False
    derived = ()

    def frozen(self, name):
        """What method `name` computes: stored on the fast path, computed now otherwise."""
        if not self.fast:
            return getattr(self, name)()
        if any(p.requires_grad for p in self._parameters.values()):
            raise RuntimeError(f"{type(self).__name__}: its weights were unfrozen after set_fast(True), so the "
                               "tensors derived from them could go stale; call set_fast(False) to train")
        return self._buffers[FROZEN + name]

    def add(self, x, y):
        """x + y, written into x on the fast path (only for an x that autograd does not keep)."""
        return x.add_(y) if self.fast else x + y

    def switch(self, fast):
        """Fast path on (deriving the stored tensors) or off (dropping them)."""
        if fast == self.fast:
            return
        self.fast = fast
        if fast:
            self.store_derived()
        else:
            for name in self.derived:
                if FROZEN + name in self._buffers:
                    delattr(self, FROZEN + name)

    @torch.no_grad()
    def store_derived(self):
        for name in self.derived:
            self.register_buffer(FROZEN + name, getattr(self, name)(), persistent=False)

    def _apply(self, fn, recurse=True):  # what .to(), .double(), .cuda() ... go through
        kinds = self.tensor_kinds()
        super()._apply(fn, recurse)
        if self.fast and self.tensor_kinds() != kinds:
            self.store_derived()
        return self

    def tensor_kinds(self):
        return [(t.dtype, t.device) for t in (*self._parameters.values(), *self._buffers.values())]

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        if self.fast:
            self.store_derived()


def set_fast(model, enabled):
    """Fast path of every FastOps module in `model` on or off; returns `model`.

    On means the tensors derived from the weights are computed once, now, so the weights must
    be frozen (ValueError otherwise)."""
    modules = [module for module in model.modules() if isinstance(module, FastOps)]
    if enabled and any(p.requires_grad for module in modules for p in module.parameters(recurse=False)):
        raise ValueError("the fast path needs frozen weights: call requires_grad_(False) first")
    for module in modules:
        module.switch(enabled)
    return model
