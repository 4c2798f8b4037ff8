"""Convolution building blocks shared by the iSSAM U-Net and DucoNet.

Class and attribute names follow the official ``basic_blocks.py`` / ``unet.py``
so that official state dicts (``...convs.block.0.block.1.running_mean``) load
without renaming.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

#: A module factory such as ``nn.BatchNorm2d`` or ``partial(nn.ReLU, inplace=True)``.
NormLayer = Callable[[int], nn.Module]
Activation = Callable[[], nn.Module]


class ConvBlock(nn.Module):
    """Conv2d -> norm (or Identity) -> activation, as ``block = Sequential(...)``.

    The convolution keeps its bias even when a norm follows: the official
    checkpoints carry those biases.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 4, stride: int = 2,
                 padding: int = 1, norm_layer: NormLayer | None = nn.BatchNorm2d,
                 activation: Activation = nn.ELU, bias: bool = True) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=padding, bias=bias),
            norm_layer(out_channels) if norm_layer is not None else nn.Identity(),
            activation(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class UNetDoubleConv(nn.Module):
    """Two 3x3 ``ConvBlock``s (stride 1) with the same norm and activation."""

    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer | None,
                 activation: Activation, padding: int = 1) -> None:
        super().__init__()
        self.block = nn.Sequential(
            ConvBlock(in_channels, out_channels, kernel_size=3, stride=1, padding=padding,
                      norm_layer=norm_layer, activation=activation),
            ConvBlock(out_channels, out_channels, kernel_size=3, stride=1, padding=padding,
                      norm_layer=norm_layer, activation=activation),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)
