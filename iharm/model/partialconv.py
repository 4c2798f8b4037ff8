"""Partial convolution (Liu et al., ECCV 2018) with a single-channel mask.

BargainNet's domain code extractor sees only the pixels of one region (the
foreground or the background) by running every convolution on ``x * mask`` and
rescaling each output by how much of its window was inside the region. This is
NVIDIA's ``PartialConv2d`` with ``multi_channel=False, return_mask=True`` as the
official code uses it, with the same arithmetic (so the numbers match) and the
same state dict (only ``weight`` and ``bias``: the all-ones window kernel is
rebuilt on the fly, never stored).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PartialConv2d(nn.Conv2d):
    """``nn.Conv2d`` restricted to a region: ``forward(x, mask) -> (out, new_mask)``.

    For each output position, with ``cnt`` the sum of the mask over the window
    and ``upd = clamp(cnt, 0, 1)``::

        out = (conv_nobias(x * mask) * k*k / (cnt + 1e-8) * upd + bias) * upd

    (without a bias: ``conv(x * mask) * k*k / (cnt + 1e-8) * upd``), and ``upd``
    is the mask of the next layer. Soft masks are allowed: ``cnt`` is then
    fractional. The mask has one channel and broadcasts over the input channels.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != x.shape[0] or mask.shape[2:] != x.shape[2:]:
            raise ValueError(f"PartialConv2d: mask must be (B, 1, H, W) matching the input {tuple(x.shape)}, "
                             f"got {tuple(mask.shape)}")
        # The window statistics depend on the mask only; like the official layer they
        # carry no gradient. They stay in (at least) float32 under autocast: in fp16,
        # count + 1e-8 rounds to 0 outside the region and 9 / 0 * 0 gives NaN.
        dtype = torch.promote_types(mask.dtype, torch.float32)
        with torch.no_grad(), torch.autocast(mask.device.type, enabled=False):
            ones = torch.ones(1, 1, *self.kernel_size, dtype=dtype, device=mask.device)
            count = F.conv2d(mask.to(dtype), ones, stride=self.stride, padding=self.padding, dilation=self.dilation)
            window = float(self.kernel_size[0] * self.kernel_size[1])
            update_mask = torch.clamp(count, 0, 1)
            ratio = window / (count + 1e-8) * update_mask
        raw = super().forward(x * mask)
        if self.bias is None:
            return raw * ratio, update_mask
        # The official layer convolves with the bias and takes it out again before
        # rescaling; doing the same keeps the rounding identical.
        bias = self.bias.view(1, -1, 1, 1)
        return ((raw - bias) * ratio + bias) * update_mask, update_mask
