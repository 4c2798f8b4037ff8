"""Weight initialisation exactly as the official model scripts do it.

``XavierGluon`` is iSSAM's port of MXNet Gluon's Xavier initializer, applied
with ``module.apply``: norm layers get weight 1 / bias 0; every other module
with a non-None ``weight`` attribute gets N(0, sqrt(magnitude / factor)) (or
the uniform equivalent) and bias 0.

Two consequences are kept on purpose, because the official checkpoints and
training runs depend on them:

* ``weight`` may be a *buffer*: the ``mask_blurring`` "Gaussian" kernel of the
  Spatial-Separated Attention is overwritten with N(0, 1/7) noise (fan_in =
  fan_out = 49), so both networks train with a fixed random 7x7 kernel.
* DucoNet's StyleGAN2 blocks must keep their constructor init (raw weights
  N(0, 1), style biases 1); their ``weight`` attribute is a module, which
  XavierGluon cannot initialise. The DucoNet scripts therefore walk the model
  with a skip list by depth (:data:`DUCONET_SKIP_NAMES`).

Both entry points consume the global torch RNG in the official order, so after
``torch.manual_seed(s)`` a model built and initialised here holds the same
weights as one built by the official ``init_model`` with the same seed.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import math

import torch
from torch import nn

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d,
               nn.InstanceNorm3d, nn.GroupNorm, nn.SyncBatchNorm)


class XavierGluon:
    """``module.apply`` callable: Gluon-style Xavier for weights, zeros for biases, (1, 0) for norms.

    ``factor_type`` picks the fan: 'avg' = (fan_in + fan_out) / 2, 'in', 'out';
    ``rnd_type`` 'gaussian' draws N(0, sqrt(magnitude / factor)), 'uniform'
    draws U(-s, s) with the same s.
    """

    def __init__(self, rnd_type: str = "uniform", factor_type: str = "avg", magnitude: float = 3.0) -> None:
        if rnd_type not in ("uniform", "gaussian"):
            raise ValueError(f"XavierGluon: unknown rnd_type '{rnd_type}'")
        if factor_type not in ("avg", "in", "out"):
            raise ValueError(f"XavierGluon: unknown factor_type '{factor_type}'")
        self.rnd_type = rnd_type
        self.factor_type = factor_type
        self.magnitude = float(magnitude)

    @torch.no_grad()
    def __call__(self, module: nn.Module) -> None:
        if isinstance(module, _NORM_TYPES) or "BatchNorm" in type(module).__name__:
            if module.weight is not None:
                module.weight.fill_(1.0)
            if module.bias is not None:
                module.bias.zero_()
            return
        weight = getattr(module, "weight", None)
        if weight is not None:
            if not isinstance(weight, torch.Tensor):
                raise TypeError(f"XavierGluon cannot initialise {type(module).__name__}: its 'weight' is a "
                                f"{type(weight).__name__}; skip it (see init_duconet_weights)")
            self._init_weight(weight)
        bias = getattr(module, "bias", None)
        if bias is not None:
            bias.zero_()

    def _init_weight(self, weight: torch.Tensor) -> None:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
        factor = {"avg": (fan_in + fan_out) / 2.0, "in": fan_in, "out": fan_out}[self.factor_type]
        scale = math.sqrt(self.magnitude / factor)
        if self.rnd_type == "gaussian":
            nn.init.normal_(weight, 0, scale)
        else:
            nn.init.uniform_(weight, -scale, scale)


#: The official DucoNet skip list: at depth i, children with these names are
#: descended into instead of initialised; the style blocks (depth 4) are left as built.
DUCONET_SKIP_NAMES: Mapping[int, Sequence[str]] = {
    0: ("decoder",),
    1: ("up_blocks",),
    2: ("0", "1", "2"),
    3: ("control_module",),
    4: ("a_styleblock", "b_styleblock", "l_styleblock"),
}


def apply_with_skip_names(model: nn.Module, init: XavierGluon, skip_names: Mapping[int, Sequence[str]],
                          level: int = 0) -> None:
    """Apply ``init`` to every child subtree except those named in ``skip_names[level]``,
    which are descended into at ``level + 1``; below the deepest level nothing is touched.

    This is the recursion of the official ``models/DucoNet_*.py`` (``_model_init``).
    """
    if level not in skip_names:
        return
    for name, child in model.named_children():
        if name in skip_names[level]:
            apply_with_skip_names(child, init, skip_names, level + 1)
        else:
            child.apply(init)


def init_duconet_weights(model: nn.Module) -> None:
    """Initialise a ``DucoNet_model`` as ``models/DucoNet_256.py`` / ``_1024.py`` do.

    XavierGluon(gaussian, avg, magnitude 1) everywhere except inside the
    ``{l,a,b}_styleblock`` branches of the control modules (constructor init
    kept: EqualizedWeight ~N(0, 1), ``to_style`` bias 1, StyleBlock bias and
    ``scale_noise`` 0). The attention blur buffer becomes N(0, 1/7) noise.
    """
    apply_with_skip_names(model, XavierGluon(rnd_type="gaussian", factor_type="avg", magnitude=1.0),
                          DUCONET_SKIP_NAMES)


def init_issam_weights(model: nn.Module) -> None:
    """Initialise an ``SSAMImageHarmonization`` as ``models/fixed256/improved_ssam.py`` does:
    XavierGluon(gaussian, avg, magnitude 1) on the whole model (blur buffer included)."""
    model.apply(XavierGluon(rnd_type="gaussian", factor_type="avg", magnitude=1.0))


@torch.no_grad()
def start_at_composite(model: nn.Module, gate_logit: float) -> None:
    """Make an image-fusion network (iSSAM, DucoNet) start near ``output = composite``.

    The fusion head returns ``a * image + (1 - a) * to_rgb(features)`` with
    ``a = sigmoid(3 * conv_attention(features))``. Zero weights and bias
    ``gate_logit`` in ``conv_attention`` give ``a = sigmoid(3 * gate_logit)``
    everywhere (0.998 for 2.0), so training begins at the Composite baseline
    instead of far below it, and the gradient still reaches the gate's weights.
    """
    gate = getattr(getattr(model, "decoder", None), "conv_attention", None)
    if not isinstance(gate, nn.Conv2d):
        raise ValueError(f"{type(model).__name__} has no image-fusion gate (decoder.conv_attention)")
    gate.weight.zero_()
    gate.bias.fill_(gate_logit)
