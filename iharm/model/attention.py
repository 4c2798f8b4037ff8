"""Spatial-Separated Attention (S2AM) and its parts, as in the iSSAM code base.

Names follow the official modules (``background_gate``, ``learning_block``,
``mask_blurring`` ...) so that official state dicts load unchanged.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from iharm.model.blocks import Activation, ConvBlock, NormLayer


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([pool(x) for pool in self.global_pools], dim=1).flatten(start_dim=1)
        return self.attention_transform(pooled)[..., None, None] * x


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


class SpatialSeparatedAttention(nn.Module):
    """S2AM: separate channel gates for background, foreground and their mix.

    ``output = m * (learning_block(foreground_gate(x)) + mix_gate(x)) + (1 - m) * background_gate(x)``
    with ``m`` the full-resolution mask resized to ``x`` (bilinear,
    align_corners=True) and passed through ``mask_blurring``.
    """

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
        mask = self.mask_blurring(F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=True))
        background = self.background_gate(x)
        foreground = self.learning_block(self.foreground_gate(x))
        mix = self.mix_gate(x)
        return mask * (foreground + mix) + (1 - mask) * background
