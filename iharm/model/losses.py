"""Pixel losses of the iSSAM family, returning one value per sample.

Each loss names what it consumes: ``pred_outputs`` are keys of the model's
output dict, ``gt_outputs`` keys of the batch, and the trainer calls
``loss(*[output[k] for k in loss.pred_outputs], *[batch[k] for k in loss.gt_outputs])``
and reduces the per-sample values (the official trainer takes their mean).
"""
from __future__ import annotations

import torch
from torch import nn


class Loss(nn.Module):
    """Base class: a loss and the output / batch keys it reads."""

    def __init__(self, pred_outputs: tuple[str, ...], gt_outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.pred_outputs = pred_outputs
        self.gt_outputs = gt_outputs


def _per_sample_dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.dim()))


class MaskWeightedMSE(Loss):
    """Foreground-normalised MSE: ``sum_CHW (pred - target)^2 / (C * max(sum_HW mask, min_area))``.

    The squared error is summed over all pixels (background too) but divided
    by the foreground area, so small objects are not drowned out; ``min_area``
    (in pixels of the training crop) bounds the weight of tiny masks. The class
    default is 1000 (iSSAM); the DucoNet scripts use 100.
    """

    def __init__(self, min_area: float = 1000.0, pred_name: str = "images",
                 gt_image_name: str = "target_images", gt_mask_name: str = "masks") -> None:
        super().__init__(pred_outputs=(pred_name,), gt_outputs=(gt_image_name, gt_mask_name))
        self.min_area = min_area

    def forward(self, pred: torch.Tensor, label: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        label = label.view(pred.size())
        dims = _per_sample_dims(label)
        denominator = pred.size(1) * torch.clamp_min(torch.sum(mask, dim=dims), self.min_area)
        return torch.sum((pred - label) ** 2, dim=dims) / denominator
