"""BargainNet's training losses: L1 reconstruction and the two domain-code triplet losses.

The official objective is::

    L = L1(harmonized, real) + LAMBDA_TRI * (T(real_fg, harm_fg, comp_fg) + T(harm_fg, bg, comp_fg))

with ``T(anchor, positive, negative) = max(d(a, p) - d(a, n) + 0.1, 0)``: the
harmonized foreground should be closer to the real foreground than to the
composite's, and its domain code closer to the background's than the
composite foreground's is.

Each loss object names what it consumes: ``pred_outputs`` from the model's
output dict, ``gt_outputs`` from the batch; the trainer calls
``loss(*[output[k] for k in pred_outputs], *[batch[k] for k in gt_outputs])``
and takes the mean of the per-sample (B,) result, then multiplies by the
weight it was configured with (1.0 for L1, :data:`LAMBDA_TRI` for the triplets).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

#: Official weight of the triplet term (``--lambda_tri``).
LAMBDA_TRI = 0.01
#: Official triplet margin (``--margin``).
TRIPLET_MARGIN = 0.1
#: ``nn.TripletMarginLoss`` adds this to the code difference before the norm.
PAIRWISE_EPS = 1e-6

TripletDistance = Literal["euclidean", "elementwise"]


class BargainNetL1(nn.Module):
    """Mean absolute error over the whole image (not masked), per sample -> (B,).

    The batch mean equals the official ``nn.L1Loss()(harmonized, real)`` because
    every sample has the same number of elements.
    """

    pred_outputs = ("images",)
    gt_outputs = ("target_images",)

    def forward(self, harmonized: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return (harmonized - real).abs().flatten(1).mean(dim=1)


class DomainTripletLoss(nn.Module):
    """``lambda_ff2 * T(real_fg, harm_fg, comp_fg) + lambda_f2b * T(harm_fg, bg, comp_fg)`` per sample -> (B,).

    ``distance='euclidean'`` (default) measures ``d(x, y) = ||x - y + 1e-6||_2``
    over the flattened code, the loss the paper describes and, as far as can be
    told, what the 2021 PyTorch computed on the official (B, 16, 1, 1) codes.
    ``distance='elementwise'`` reproduces what the official code computes on
    current PyTorch: ``pairwise_distance`` runs over the last axis, of size 1,
    so each of the 16 code entries is its own "distance" ``|x_i - y_i + 1e-6|``
    with its own hinge, averaged over the entries. Use it only to match
    numbers produced that way.
    """

    pred_outputs = ("real_fg_code", "harm_fg_code", "comp_fg_code", "bg_code")
    gt_outputs = ()

    def __init__(self, margin: float = TRIPLET_MARGIN, distance: TripletDistance = "euclidean",
                 lambda_ff2: float = 1.0, lambda_f2b: float = 1.0) -> None:
        super().__init__()
        if distance not in ("euclidean", "elementwise"):
            raise ValueError(f"distance must be 'euclidean' or 'elementwise', got {distance!r}")
        self.margin = margin
        self.distance = distance
        self.lambda_ff2 = lambda_ff2
        self.lambda_f2b = lambda_f2b

    def forward(self, real_fg_code: torch.Tensor, harm_fg_code: torch.Tensor, comp_fg_code: torch.Tensor,
                bg_code: torch.Tensor) -> torch.Tensor:
        ff2 = self.triplet(real_fg_code, harm_fg_code, comp_fg_code)
        f2b = self.triplet(harm_fg_code, bg_code, comp_fg_code)
        return self.lambda_ff2 * ff2 + self.lambda_f2b * f2b

    def triplet(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """One triplet margin loss per sample (B,) on codes of any shape (B, ...)."""
        anchor, positive, negative = (code.flatten(1) for code in (anchor, positive, negative))
        hinge = torch.clamp(self._distance(anchor, positive) - self._distance(anchor, negative) + self.margin, min=0)
        return hinge if self.distance == "euclidean" else hinge.mean(dim=1)

    def _distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        diff = x - y + PAIRWISE_EPS
        return torch.linalg.vector_norm(diff, dim=1) if self.distance == "euclidean" else diff.abs()
