"""Spatial-Separated Attention (S2AM) and its parts, as in the iSSAM code base.

Names follow the official modules (``background_gate``, ``learning_block``,
``mask_blurring`` ...) so that official state dicts load unchanged.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from iharm.model.blocks import Activation, ConvBlock, NormLayer
from iharm.model.fast_path import FastPathModule, map_region, mask_box, row_bands


def resize_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The mask resized to ``size`` as the official code does (bilinear, align_corners=True).

    A mask that already has that size is returned as it is: the official
    resize to the same size is an exact copy.
    """
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask, size=tuple(size), mode="bilinear", align_corners=True)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate fed by global average and max pooling (concatenated in that order)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.global_pools = nn.ModuleList([nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)])
        intermediate_channels = max(in_channels // 16, 8)
        self.attention_transform = nn.Sequential(
            nn.Linear(len(self.global_pools) * in_channels, intermediate_channels),
            nn.ReLU(),
            nn.Linear(intermediate_channels, in_channels),
            nn.Sigmoid(),
        )

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The gate's input: global average and max of x, (B, 2C)."""
        return torch.cat([pool(x) for pool in self.global_pools], dim=1).flatten(start_dim=1)

    def channel_weights(self, pooled: torch.Tensor) -> torch.Tensor:
        """The per-channel gate (B, C, 1, 1) for the pooled input ``self.pool(x)``."""
        return self.attention_transform(pooled)[..., None, None]

    def forward(self, x: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` scaled per channel; ``pooled`` is ``self.pool(x)`` when the caller already has it."""
        return self.channel_weights(self.pool(x) if pooled is None else pooled) * x


class GaussianSmoothing(nn.Module):
    """Depthwise 2-D convolution with a fixed kernel held in the persistent buffer ``weight``.

    The constructor fills the buffer with a normalised Gaussian, but the
    official model scripts run ``XavierGluon`` over this module, which
    overwrites any attribute named ``weight`` (buffers included) with
    N(0, 1/7) noise. The official checkpoints therefore carry a random kernel:
    always load the buffer from the checkpoint, never rebuild it.
    """

    def __init__(self, channels: int, kernel_size: int, sigma: float, padding: int = 0) -> None:
        super().__init__()
        grid = torch.arange(kernel_size, dtype=torch.float32)
        mean = (kernel_size - 1) / 2.0
        profile = torch.exp(-((grid - mean) / sigma) ** 2 / 2) / (sigma * math.sqrt(2 * math.pi))
        kernel = profile[:, None] * profile[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, kernel_size, kernel_size).clone())
        self.groups = channels
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight=self.weight, padding=self.padding, groups=self.groups)


class SpatialSeparatedAttention(FastPathModule):
    """S2AM: separate channel gates for background, foreground and their mix.

    ``output = m * (learning_block(foreground_gate(x)) + mix_gate(x)) + (1 - m) * background_gate(x)``
    with ``m`` the full-resolution mask resized to ``x`` (bilinear,
    align_corners=True) and passed through ``mask_blurring``.

    Fast path: ``share_intermediates`` pools x once for the three gates (they
    pool it identically); ``crop_to_mask`` (eval mode, where BatchNorm is
    per-pixel) runs the learning block only on the bounding box of ``m != 0``
    plus its 2-pixel halo, since ``m`` is exactly 0 elsewhere.
    """

    fast_path_options = ("share_intermediates", "crop_to_mask", "lean_memory")

    #: Receptive-field halo of the learning block: two 3x3 convolutions.
    HALO = 2

    def __init__(self, in_channels: int, norm_layer: NormLayer | None, activation: Activation,
                 mid_k: float = 2.0) -> None:
        super().__init__()
        self.background_gate = ChannelAttention(in_channels)
        self.foreground_gate = ChannelAttention(in_channels)
        self.mix_gate = ChannelAttention(in_channels)
        mid_channels = int(mid_k * in_channels)
        self.learning_block = nn.Sequential(
            ConvBlock(in_channels, mid_channels, kernel_size=3, stride=1, padding=1,
                      norm_layer=norm_layer, activation=activation, bias=False),
            ConvBlock(mid_channels, in_channels, kernel_size=3, stride=1, padding=1,
                      norm_layer=norm_layer, activation=activation, bias=False),
        )
        self.mask_blurring = GaussianSmoothing(1, 7, 1, padding=3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = self.mask_blurring(resize_mask(mask, x.shape[-2:]))
        fast = self.fast_path
        pooled = self.background_gate.pool(x) if fast.share_intermediates else None
        if self.training or not fast.crop_to_mask:
            background = self.background_gate(x, pooled)
            foreground = self.learning_block(self.foreground_gate(x, pooled))
            mix = self.mix_gate(x, pooled)
            return mask * (foreground + mix) + (1 - mask) * background
        return self._forward_cropped(x, mask, self.background_gate.pool(x) if pooled is None else pooled)

    def _forward_cropped(self, x: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """Eval mode. With the gates ``bg = w_bg * x``, ``mix = w_mix * x``:
        ``m * (fg + mix) + (1 - m) * bg == x * (w_bg + m * (w_mix - w_bg)) + m * fg``,
        one full-size tensor instead of four, and ``m * fg`` is 0 outside the mask's box.

        In inference with ``lean_memory`` the result is written over ``x``, as
        the network's in-place ReLUs do, a band of rows at a time.
        """
        background = self.background_gate.channel_weights(pooled)
        difference = self.mix_gate.channel_weights(pooled) - background
        lean = self.fast_path.lean_memory and not torch.is_grad_enabled()
        box = mask_box(mask, self.HALO)
        # The foreground gate's channel weights come from the whole x (pooled), not from the crop;
        # the foreground is computed before x is overwritten.
        foreground = None if box is None else map_region(
            lambda crop: self.learning_block(self.foreground_gate(crop, pooled)), x, box, self.HALO, banded=lean)
        # The elementwise work runs in x's memory order (N, H, W, C for channels_last), so that the
        # full-size per-pixel gate is written and read sequentially.
        order = (0, 2, 3, 1) if x.is_contiguous(memory_format=torch.channels_last) else (0, 1, 2, 3)
        row_dim, col_dim = order.index(2), order.index(3)
        x_view, mask_view, background, difference = (t.permute(order) for t in (x, mask, background, difference))
        if lean:
            for rows in row_bands(0, x.shape[-2], x.shape[-1]):
                band = rows.stop - rows.start
                x_view.narrow(row_dim, rows.start, band).mul_(
                    torch.addcmul(background, mask_view.narrow(row_dim, rows.start, band), difference))
            blend = x_view
        else:
            blend = x_view * torch.addcmul(background, mask_view, difference)
        if box is not None:
            rows, cols = box.region

            def region(t: torch.Tensor) -> torch.Tensor:
                return t.narrow(row_dim, rows.start, rows.stop - rows.start).narrow(col_dim, cols.start,
                                                                                   cols.stop - cols.start)

            region(blend).addcmul_(region(mask_view), foreground.permute(order))
        return blend.permute([order.index(i) for i in range(4)])
