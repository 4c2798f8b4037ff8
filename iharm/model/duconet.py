"""DucoNet (Tan et al., ACM MM 2023): dual colour-space image harmonization.

The iSSAM U-Net on the ImageNet-normalised RGB composite, plus three "Lab
encoders" (one per OpenCV 8-bit Lab channel, each with the mask) that map the
image to style codes ``w_l, w_a, w_b``, plus a "Lab control module" at the end
of every decoder stage: three StyleGAN2 modulated-conv branches (one per code)
fused by a per-pixel softmax and applied inside the mask only.

Class and attribute names are the official ones (``DucoNet_model``,
``Control_Module``, ``Control_encoder``, ``map_net``, ``l_encoder``,
``G_weight`` ...), so official ``.pth`` files load with ``strict=True``.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from iharm.model.blocks import NormLayer, conv2d_activation
from iharm.model.fast_path import (FastPathModule, channels_last_inputs, contiguous_outputs, derived, map_region,
                                   mask_box)
from iharm.model.stylegan2 import ResidualBlock, StyleBlock, modulate, per_sample_conv
from iharm.model.unet import UNetEncoder, ssam_unet

#: Lab channel names in image_lab channel order; ``{c}_encoder`` encodes channel c into ``w_{c}``.
LAB_CHANNELS = ("l", "a", "b")


class map_net(nn.Module):  # noqa: N801 - official name, part of the state-dict layout
    """Global average pooling over all pixels, then an MLP int_dim -> 256 -> out_dim (no final activation)."""

    def __init__(self, int_dim: int = 256, out_dim: int = 256) -> None:
        super().__init__()
        self.int_dim = int_dim
        self.pooling = nn.AdaptiveAvgPool2d((1, 1))
        self.net = nn.Sequential(nn.Linear(int_dim, 256), nn.ReLU(inplace=True), nn.Linear(256, out_dim))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.net(self.pooling(feature_map).flatten(start_dim=1))


class Control_encoder(nn.Module):  # noqa: N801 - official name
    """U-Net encoder over [Lab channel(s), mask] whose deepest feature map becomes a style code w.

    Only the deepest feature is used (pooled over the whole image, the mask
    does not weight the pooling). The official code hard-codes the MLP input
    width to 256 and so breaks silently for other encoder widths; here it is
    the encoder's real deepest width, which is 256 in every official config.
    """

    def __init__(self, depth: int, norm_layer: NormLayer | None = nn.BatchNorm2d, batchnorm_from: int = 2,
                 ch: int = 64, max_channels: int = 512, lab_encoder_mask_channel: int = 1,
                 L_or_Lab_dim: int = 3, w_dim: int = 256) -> None:  # noqa: N803 - official keyword
        super().__init__()
        self.depth = depth
        self.w_dim = w_dim
        self.lab_encoder_mask_channel = lab_encoder_mask_channel
        self.lab_encoder = UNetEncoder(depth, ch, norm_layer, batchnorm_from, max_channels,
                                       _in_channels=L_or_Lab_dim + lab_encoder_mask_channel)
        self.map2w = map_net(int_dim=self.lab_encoder.block_channels[-1], out_dim=w_dim)

    def forward(self, image_lab: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.cat((image_lab, mask), dim=1) if self.lab_encoder_mask_channel == 1 else image_lab
        return self.map2w(self.lab_encoder(x)[0])


class Control_Module(FastPathModule):  # noqa: N801 - official name
    """Lab control module of one decoder stage.

    Three modulated-conv branches (``l/a/b_styleblock``, driven by ``w_l/w_a/w_b``)
    are fused with per-pixel softmax weights from ``G_weight`` (1x1 convs
    3F -> 32 -> 3); the fused features replace ``x`` inside the stage mask:
    ``x * (1 - m) + m * fused``.

    Fast path: ``pack_styles`` runs the three branches as one modulated
    convolution per layer; ``crop_to_mask`` computes ``fused`` only on the
    mask's bounding box (plus the 2-pixel halo of the two 3x3 convolutions),
    since outside it ``m`` is exactly 0 and the blend returns ``x``. In
    inference with ``lean_memory`` the box is processed in bands of rows and
    the result is written over ``x``.
    """

    fast_path_options = ("pack_styles", "fuse_activation", "crop_to_mask", "lean_memory")

    #: Receptive-field halo of a style branch: two 3x3 convolutions.
    HALO = 2

    def __init__(self, w_dim: int, feature_dim: int) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.feature_dim = feature_dim
        self.l_styleblock = ResidualBlock(w_dim, feature_dim, feature_dim)
        self.a_styleblock = ResidualBlock(w_dim, feature_dim, feature_dim)
        self.b_styleblock = ResidualBlock(w_dim, feature_dim, feature_dim)
        self.G_weight = nn.Sequential(  # noqa: N815 - official name
            nn.Conv2d(feature_dim * 3, 32, kernel_size=1, stride=1, padding=0, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0, bias=True),
        )

    def forward(self, x: torch.Tensor, sl: torch.Tensor, sa: torch.Tensor, sb: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        styles = (sl, sa, sb)
        fast = self.fast_path
        box = mask_box(mask, self.HALO) if fast.crop_to_mask else None
        if box is None:
            if fast.crop_to_mask and not torch.is_grad_enabled():
                return x  # an all-zero mask: the blend is x * 1 + 0 * fused
            # Plain path, or an all-zero mask in training: the full computation gives every
            # style parameter its (zero) gradient, as officially.
            return self._blend(x, self._fuse(self._branches(x, styles)), mask)
        lean = fast.lean_memory and not torch.is_grad_enabled()
        fused = map_region(lambda crop: self._fuse(self._branches(crop, styles)), x, box, self.HALO, banded=lean)
        rows, cols = box.region
        region_mask = mask[..., rows, cols]
        if lean:
            # x * (1 - m) + m * fused written over x, as the network's in-place ReLUs do.
            x[..., rows, cols] = fused.mul_(region_mask).addcmul_(x[..., rows, cols], 1 - region_mask)
            return x
        out = x.clone()
        out[..., rows, cols] = self._blend(x[..., rows, cols], fused, region_mask)
        return out

    def _branches(self, x: torch.Tensor, styles: Sequence[torch.Tensor]) -> torch.Tensor:
        """``cat(f_l, f_a, f_b)``, the three style branches on x."""
        branches = (self.l_styleblock, self.a_styleblock, self.b_styleblock)
        if not self.fast_path.pack_styles:
            return torch.cat([branch(x, style) for branch, style in zip(branches, styles)], dim=1)
        # Layer 1 reads x in every branch: one convolution with 3F outputs per sample.
        # Layer 2 reads each branch's own output: a grouped convolution, 3 groups per sample.
        for layer, groups in (("style_block1", 1), ("style_block2", len(branches))):
            x = self._packed_layer(layer, [getattr(branch, layer) for branch in branches], x, styles, groups)
        return x

    def _packed_layer(self, layer: str, blocks: Sequence[StyleBlock], x: torch.Tensor,
                      styles: Sequence[torch.Tensor], groups: int) -> torch.Tensor:
        sources = [p for block in blocks for p in (block.conv.weight.weight, block.bias)]
        weight, bias = derived(self, layer, sources, lambda: (
            torch.stack([block.conv.weight() for block in blocks]), torch.cat([block.bias for block in blocks])))
        conv = blocks[0].conv
        style = torch.stack([block.to_style(w) for block, w in zip(blocks, styles)], dim=1)
        # The style bias and the LeakyReLU go into the (per-sample) convolution call.
        batch_bias = bias.repeat(x.shape[0])

        def conv_bias_activation(inputs: torch.Tensor, kernels: torch.Tensor, padding: int, groups: int) -> torch.Tensor:
            return conv2d_activation(inputs, kernels, batch_bias, (1, 1), (padding, padding), (1, 1), groups,
                                     blocks[0].activation, fuse=self.fast_path.fuse_activation)

        return per_sample_conv(x, modulate(weight, style, conv.demodulate, conv.eps), conv.padding, groups,
                               conv=conv_bias_activation)

    def _fuse(self, features: torch.Tensor) -> torch.Tensor:
        """Softmax-weighted sum of the branches (``features`` is their concatenation)."""
        f_l, f_a, f_b = features.split(self.feature_dim, dim=1)
        weights = torch.softmax(self.G_weight(features), dim=1)
        return weights[:, 0:1] * f_l + weights[:, 1:2] * f_a + weights[:, 2:3] * f_b

    @staticmethod
    def _blend(x: torch.Tensor, fused: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x * (1 - mask) + mask * fused


class DucoNet_model(FastPathModule):  # noqa: N801 - official name
    """DucoNet. ``forward(image, mask, image_lab) -> {'images': out}``.

    ``image`` is the ImageNet-normalised RGB composite (B,3,H,W), ``mask`` the
    soft foreground mask (B,1,H,W), ``image_lab`` the OpenCV 8-bit Lab image
    divided by 255 (B,3,H,W, no mean/std). ``out`` is in the normalised space
    of ``image``. H and W must be multiples of 8 (the Predictor pads to 32).

    ``control_module_start``: -1 or 0 puts a control module on all three
    decoder stages, 1 on stages 1-2, 2 on the last stage only, >= 3 on none.
    The defaults are the published configuration (``models/DucoNet_256.py``).
    Fast path: ``channels_last`` (CPU inference in NHWC, outputs contiguous).
    """

    fast_path_options = ("channels_last",)

    def __init__(self, depth: int = 4, norm_layer: NormLayer | None = nn.BatchNorm2d, batchnorm_from: int = 2,
                 attend_from: int = 2, attention_mid_k: float = 0.5, image_fusion: bool = True,
                 ch: int = 32, max_channels: int = 512, backbone_from: int = -1,
                 backbone_channels: Sequence[int] | None = None, backbone_mode: str = "",
                 control_module_start: int = -1, lab_encoder_mask_channel: int = 1, w_dim: int = 256) -> None:
        super().__init__()
        self.depth = depth
        self.control_module_start = control_module_start
        self.w_dim = w_dim
        # Stored for API compatibility; the official model never reads it (its Lab encoders hard-code 1).
        self.lab_encoder_mask_channel = lab_encoder_mask_channel
        self.encoder, self.decoder = ssam_unet(
            depth, ch, norm_layer, batchnorm_from, max_channels, attend_from=attend_from,
            attention_mid_k=attention_mid_k, image_fusion=image_fusion, backbone_from=backbone_from,
            backbone_channels=backbone_channels, backbone_mode=backbone_mode,
            control_module_layer=Control_Module, control_module_start=control_module_start, w_dim=w_dim,
        )
        # The official Lab encoders ignore norm_layer / batchnorm_from / max_channels of the model.
        lab_encoder = partial(Control_encoder, depth=depth, ch=ch, batchnorm_from=2,
                              lab_encoder_mask_channel=1, L_or_Lab_dim=1, w_dim=w_dim)
        self.l_encoder = lab_encoder()
        self.a_encoder = lab_encoder()
        self.b_encoder = lab_encoder()

    def encode_lab(self, image_lab: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Style codes ``{'w_l', 'w_a', 'w_b'}`` (each B x w_dim), one Lab channel per encoder."""
        return {f"w_{name}": getattr(self, f"{name}_encoder")(image_lab[:, i:i + 1], mask)
                for i, name in enumerate(LAB_CHANNELS)}

    def forward(self, image: torch.Tensor, mask: torch.Tensor, image_lab: torch.Tensor | None = None,
                backbone_features: Sequence[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        if image_lab is None:
            raise ValueError("DucoNet_model needs image_lab: the OpenCV 8-bit Lab composite / 255, "
                             "shape (B, 3, H, W) like image (see iharm.data.color.rgb_to_lab)")
        if image_lab.shape[1] != 3 or image_lab.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"DucoNet_model: image_lab must be (B, 3, H, W) with the size of image "
                             f"{tuple(image.shape)}, got {tuple(image_lab.shape)} (pad it like the image)")
        image, mask, image_lab = channels_last_inputs(self, image, mask, image_lab)
        intermediates = self.encoder(torch.cat((image, mask), dim=1), backbone_features)
        return contiguous_outputs({"images": self.decoder(intermediates, image, mask,
                                                          self.encode_lab(image_lab, mask))})
