"""Input normalisations of the models, applied on the device.

The data pipeline hands over uint8 images; each model declares (in the
registry) which normalisation it was trained with. ``normalize(x_uint8)`` is
bit-identical to torchvision's ``ToTensor()`` + ``Normalize(mean, std)`` and to
the official predictor's ``image / 255`` followed by in-place ``(x - mean) / std``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch


@lru_cache(maxsize=64)
def _constants(values: tuple[float, ...], dtype: torch.dtype, device: torch.device, dim: int) -> torch.Tensor:
    """``values`` as a broadcastable per-channel tensor, made once per device, dtype and rank (on a GPU a new
    one every call would be a host-to-device copy in every step). Made outside inference mode, so that a
    tensor first made under it can still take part in a training graph; never modified in place."""
    with torch.inference_mode(False):
        return torch.tensor(values, dtype=dtype, device=device).view((1, 3, 1, 1) if dim == 4 else (3, 1, 1))


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean / std of an RGB input in [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = like.dtype if like.is_floating_point() else torch.float32
        dim = 4 if like.dim() == 4 else 3
        return _constants(self.mean, dtype, like.device, dim), _constants(self.std, dtype, like.device, dim)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or float in [0, 255]) NCHW / CHW -> normalised float32."""
        x = images.float().div(255)
        mean, std = self._stats(x)
        return x.sub(mean).div(std)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised tensor -> values on the 0..255 scale (not clamped, not rounded)."""
        mean, std = self._stats(x)
        return (x * std + mean) * 255


#: ImageNet statistics: DucoNet, iSSAM and the rest of the iSSAM family.
IMAGENET = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
#: (x - 0.5) / 0.5, i.e. [-1, 1]: BargainNet (pix2pix family).
SYMMETRIC = Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
