"""StyleGAN2 modulated convolutions, as DucoNet's control modules use them.

DucoNet took these from labml.ai's annotated StyleGAN2; only the classes it
uses are kept here, with the same names and parameter layout
(``to_style.weight.weight``, ``conv.weight.weight``, ``scale_noise``, ``bias``).
Weights are stored unscaled, ~N(0, 1), and multiplied by the He constant at
run time (equalized learning rate).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def modulate(weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, eps: float) -> torch.Tensor:
    """Per-sample kernels ``weight * style`` over the input channels, optionally demodulated.

    ``weight`` is (..., out, in, k, k) and ``styles`` (B, ..., in) with the same
    leading dimensions: one kernel (out, in, k, k) and style each for one layer,
    or K of each for K layers at once. Demodulation scales every output
    channel of every kernel to unit L2 norm (``rsqrt(sum w^2 + eps)``).
    Returns (B, ..., out, in, k, k).
    """
    kernels = weight[None] * styles[..., None, :, None, None]
    if demodulate:
        kernels = kernels * torch.rsqrt((kernels ** 2).sum(dim=(-3, -2, -1), keepdim=True) + eps)
    return kernels


def per_sample_conv(x: torch.Tensor, kernels: torch.Tensor, padding: int, groups: int = 1,
                    conv: Callable[..., torch.Tensor] = F.conv2d) -> torch.Tensor:
    """Convolve each sample of ``x`` (B, C, H, W) with its own kernels (B, ..., out, C / groups, k, k)
    as one grouped convolution (``groups`` per sample); returns (B, all outputs, H, W).

    ``conv(input, weight, padding=, groups=)`` runs it (a fused conv + bias + activation, say).
    """
    b, _, h, w = x.shape
    out = conv(x.reshape(1, -1, h, w), kernels.reshape(-1, *kernels.shape[-3:]), padding=padding, groups=b * groups)
    return out.reshape(b, -1, h, w)


def modulated_conv_on_activations(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                                  eps: float, padding: int) -> torch.Tensor:
    """The modulated convolution of :func:`modulate` + :func:`per_sample_conv`, with the style applied
    to the activations instead of the kernels (StyleGAN2's ``fused_modconv=False``).

    ``conv(x, W * s) = conv(x * s, W)`` and the demodulation factor of output
    channel o is ``rsqrt(sum_i s_i^2 sum_kk W[o, i]^2 + eps)``, so the whole
    batch runs as one ordinary convolution with the shared ``weight``
    (out, in, k, k) and ``styles`` (B, in). Equal up to float32 rounding. ONNX
    export uses it: an ONNX Conv has a fixed group count, so the grouped
    per-sample form would fix the batch size of the exported graph.
    """
    out = F.conv2d(x * styles[:, :, None, None], weight, padding=padding)
    if demodulate:
        out = out * torch.rsqrt((styles ** 2) @ (weight ** 2).sum(dim=(2, 3)).t() + eps)[:, :, None, None]
    return out


class EqualizedWeight(nn.Module):
    """A weight stored ~N(0, 1) and returned scaled by ``c = 1 / sqrt(prod(shape[1:]))``."""

    def __init__(self, shape: list[int]) -> None:
        super().__init__()
        self.c = 1 / math.sqrt(math.prod(shape[1:]))
        self.weight = nn.Parameter(torch.randn(shape))

    def forward(self) -> torch.Tensor:
        return self.weight * self.c


class EqualizedLinear(nn.Module):
    """Linear layer with an equalized-learning-rate weight; the bias starts at ``bias``."""

    def __init__(self, in_features: int, out_features: int, bias: float = 0.0) -> None:
        super().__init__()
        self.weight = EqualizedWeight([out_features, in_features])
        self.bias = nn.Parameter(torch.ones(out_features) * bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), bias=self.bias)


class Conv2dWeightModulate(nn.Module):
    """Convolution whose weights are scaled per sample by a style and optionally demodulated.

    Each sample gets its own kernel ``W' = c W * s[b, in]``, normalised so
    that every output channel has unit L2 norm (demodulation); the batch runs
    as one grouped convolution with ``groups = batch`` (during ONNX export as
    :func:`modulated_conv_on_activations`, whose graph takes any batch size). No bias.
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: int,
                 demodulate: bool = True, eps: float = 1e-8) -> None:
        super().__init__()
        self.out_features = out_features
        self.demodulate = demodulate
        self.padding = (kernel_size - 1) // 2
        self.weight = EqualizedWeight([out_features, in_features, kernel_size, kernel_size])
        self.eps = eps

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return modulated_conv_on_activations(x, self.weight(), s, self.demodulate, self.eps, self.padding)
        kernels = modulate(self.weight(), s, self.demodulate, self.eps)
        return per_sample_conv(x, kernels, self.padding)


class StyleBlock(nn.Module):
    """Style -> modulated 3x3 conv -> + bias -> LeakyReLU(0.2).

    ``scale_noise`` belongs to StyleGAN2's noise input, which DucoNet never
    feeds; it is kept (unused, no gradient) because the checkpoints hold it.
    """

    def __init__(self, d_latent: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.to_style = EqualizedLinear(d_latent, in_features, bias=1.0)
        self.conv = Conv2dWeightModulate(in_features, out_features, kernel_size=3)
        self.scale_noise = nn.Parameter(torch.zeros(1))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.activation = nn.LeakyReLU(0.2, True)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self.conv(x, self.to_style(w))
        return self.activation(x + self.bias[None, :, None, None])


class ResidualBlock(nn.Module):
    """Two ``StyleBlock``s driven by the same latent ``w``.

    Despite the official name there is no residual connection (and no to_rgb).
    """

    def __init__(self, d_latent: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.style_block1 = StyleBlock(d_latent, in_features, out_features)
        self.style_block2 = StyleBlock(d_latent, out_features, out_features)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.style_block2(self.style_block1(x, w), w)
