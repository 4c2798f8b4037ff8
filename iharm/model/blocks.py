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


def packed_batch_norm(norms: Sequence[nn.BatchNorm2d], x: torch.Tensor) -> torch.Tensor:
    """``cat([norms[k](x_k) for k])`` for x the concatenation of the K inputs, as one call.

    BatchNorm statistics are per channel, so each norm sees exactly its own
    batch statistics; in training every norm's running statistics and batch
    counter are updated as its own call would (same momentum rule).
    """
    first = norms[0]
    tracking = first.training and first.track_running_stats
    factor = first.momentum if first.momentum is not None else 0.0
    if tracking:
        for norm in norms:
            norm.num_batches_tracked.add_(1)
        if first.momentum is None:
            factor = 1.0 / float(first.num_batches_tracked)
    has_running = first.running_mean is not None and (not first.training or first.track_running_stats)
    running = [torch.cat([getattr(norm, name) for norm in norms]) if has_running else None
               for name in ("running_mean", "running_var")]
    affine = [torch.cat([getattr(norm, name) for norm in norms]) if first.affine else None
              for name in ("weight", "bias")]
    use_batch_stats = first.training or first.running_mean is None
    out = F.batch_norm(x, *running, *affine, use_batch_stats, factor, first.eps)
    if tracking:
        with torch.no_grad():
            for norm, mean, var in zip(norms, running[0].chunk(len(norms)), running[1].chunk(len(norms))):
                norm.running_mean.copy_(mean)
                norm.running_var.copy_(var)
    return out


def packed_conv_blocks(blocks: Sequence[ConvBlock], x: torch.Tensor) -> torch.Tensor:
    """``cat([blocks[k](x_k) for k])`` for x the concatenation of the K inputs: one grouped
    convolution (groups = K) and one BatchNorm call for K blocks of the same shape."""
    conv, norm, activation = blocks[0].block
    if all(block.folds_batchnorm for block in blocks):
        weight, bias = (torch.cat(parts) for parts in zip(*(block.folded_parameters() for block in blocks)))
    else:
        weight = torch.cat([block.block[0].weight for block in blocks])
        bias = torch.cat([block.block[0].bias for block in blocks]) if conv.bias is not None else None
    out = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, groups=len(blocks))
    if isinstance(norm, _BatchNorm) and not blocks[0].folds_batchnorm:  # SyncBatchNorm too
        if type(norm) is nn.BatchNorm2d:
            out = packed_batch_norm([block.block[1] for block in blocks], out)
        else:  # each norm's own call keeps its cross-process statistics
            out = torch.cat([block.block[1](part) for block, part in zip(blocks, out.chunk(len(blocks), 1))], 1)
    return activation(out)


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
