"""Convolution building blocks shared by the iSSAM U-Net and DucoNet.

Class and attribute names follow the official ``basic_blocks.py`` / ``unet.py``
so that official state dicts (``...convs.block.0.block.1.running_mean``) load
without renaming.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from iharm.model.fast_path import FastPathModule, derived

#: A module factory such as ``nn.BatchNorm2d`` or ``partial(nn.ReLU, inplace=True)``.
NormLayer = Callable[[int], nn.Module]
Activation = Callable[[], nn.Module]


def fold_batchnorm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one convolution equal to ``norm(conv(x))`` with the norm's running statistics."""
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    return conv.weight * scale[:, None, None, None], (bias - norm.running_mean) * scale + norm.bias


def _uses_running_stats(norm: nn.Module) -> bool:
    return (isinstance(norm, _BatchNorm) and not norm.training and norm.running_mean is not None
            and norm.affine)


def _post_op(activation: nn.Module) -> tuple[str, list[float]] | None:
    """The oneDNN post-op equal to ``activation``, if it has one."""
    if type(activation) is nn.ReLU:
        return "relu", []
    if type(activation) is nn.LeakyReLU:
        return "leaky_relu", [activation.negative_slope]
    return None


def conv2d_activation(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Sequence[int],
                      padding: Sequence[int], dilation: Sequence[int], groups: int, activation: nn.Module,
                      fuse: bool) -> torch.Tensor:
    """``activation(conv2d(x, weight, bias))`` (zero padding), as one oneDNN call when ``fuse`` allows it.

    The fused call is PyTorch's own conv with a ReLU / LeakyReLU post-op
    (``torch.ops.mkldnn._convolution_pointwise``, what torch.compile's CPU
    backend emits): float32 CPU inference without autocast only; anything
    else, or a build without it, runs the two ops.
    """
    post_op = _post_op(activation)
    if (fuse and post_op is not None and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")):
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(padding), list(stride), list(dilation),
                                                       groups, *post_op, "")
    return activation(F.conv2d(x, weight, bias, stride, padding, dilation, groups))


class ConvBlock(FastPathModule):
    """Conv2d -> norm (or Identity) -> activation, as ``block = Sequential(...)``.

    The convolution keeps its bias even when a norm follows: the official
    checkpoints carry those biases. Fast path in eval mode: ``fold_batchnorm``
    runs conv and BatchNorm as one convolution with folded weights;
    ``fuse_activation`` runs the convolution and its ReLU as one oneDNN call
    on the CPU (:func:`conv2d_activation`).
    """

    fast_path_options = ("fold_batchnorm", "fuse_activation")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 4, stride: int = 2,
                 padding: int = 1, norm_layer: NormLayer | None = nn.BatchNorm2d,
                 activation: Activation = nn.ELU, bias: bool = True) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=padding, bias=bias),
            norm_layer(out_channels) if norm_layer is not None else nn.Identity(),
            activation(),
        )

    @property
    def folds_batchnorm(self) -> bool:
        """Whether this block runs as one convolution with BatchNorm folded in (fast path, eval mode)."""
        return self.fast_path.fold_batchnorm and _uses_running_stats(self.block[1])

    def folded_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of conv + BatchNorm folded (cached in inference); needs :attr:`folds_batchnorm`."""
        conv, norm, _ = self.block
        sources = (conv.weight, norm.weight, norm.bias, norm.running_mean, norm.running_var)
        if conv.bias is not None:
            sources += (conv.bias,)
        return derived(self, "folded", sources, lambda: fold_batchnorm(conv, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm, activation = self.block
        if self.folds_batchnorm:
            weight, bias = self.folded_parameters()
        elif isinstance(norm, nn.Identity) and self.fast_path.fuse_activation:
            weight, bias = conv.weight, conv.bias
        else:
            return self.block(x)
        if conv.padding_mode != "zeros":
            return activation(conv._conv_forward(x, weight, bias))
        return conv2d_activation(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups, activation,
                                 fuse=self.fast_path.fuse_activation)


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
