"""The U-Net encoder and decoder of iSSAM, with DucoNet's optional control modules.

One implementation serves both networks: iSSAM's ``unet.py`` and DucoNet's
``unet_v1.py`` differ only by the control modules (and the encoder's input
width), so the decoder takes an optional ``control_module_layer``. Without it
the module tree, and hence the state dict, is exactly iSSAM's.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

import torch
from torch import nn

from iharm.model.attention import SpatialSeparatedAttention, resize_mask
from iharm.model.blocks import Activation, ConvBlock, NormLayer, UNetDoubleConv
from iharm.model.fast_path import FastPathModule

#: ``control_module_layer(w_dim=..., feature_dim=...)`` -> module(x, w_l, w_a, w_b, mask).
ControlModuleLayer = Callable[..., nn.Module]
#: ``attention_layer(in_channels, norm_layer, activation)`` -> module(x, mask).
AttentionLayer = Callable[[int, NormLayer | None, Activation], nn.Module]


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)


class UNetDownBlock(nn.Module):
    """Double conv, then 2x2 max pooling (Identity for the deepest block); returns (features, pooled)."""

    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer | None,
                 activation: Activation, pool: bool, padding: int = 1) -> None:
        super().__init__()
        self.convs = UNetDoubleConv(in_channels, out_channels, norm_layer=norm_layer,
                                    activation=activation, padding=padding)
        self.pooling = nn.MaxPool2d(2, 2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.convs(x)
        return features, self.pooling(features)


class UNetEncoder(nn.Module):
    """``depth`` down blocks with widths ``ch * 2**i`` (capped at ``max_channels``).

    BatchNorm is used from block ``batchnorm_from`` on. ``forward`` returns the
    pre-pooling features of every block, deepest first. Blocks 0 and 1 are
    attributes and the rest live in ``blocks_connected``, as in the official
    layout. Backbone feature connectors (``backbone_from >= 0``, used only by
    the HRNet/DeepLab variants of iSSAM) are not implemented.
    """

    def __init__(self, depth: int, ch: int, norm_layer: NormLayer | None, batchnorm_from: int,
                 max_channels: int, backbone_from: int = -1, backbone_channels: Sequence[int] | None = None,
                 backbone_mode: str = "", _in_channels: int = 4) -> None:
        super().__init__()
        if backbone_from >= 0 or backbone_channels:
            raise NotImplementedError("UNetEncoder: backbone features (backbone_from >= 0) are not supported")
        if depth < 3:
            raise ValueError(f"UNetEncoder needs depth >= 3, got {depth}")
        self.depth = depth
        self.block_channels: list[int] = []

        blocks = []
        in_channels, out_channels = _in_channels, ch
        for block_i in range(depth):
            blocks.append(UNetDownBlock(
                in_channels, out_channels,
                norm_layer=norm_layer if 0 <= batchnorm_from <= block_i else None,
                activation=_relu, pool=block_i < depth - 1,
            ))
            self.block_channels.append(out_channels)
            in_channels, out_channels = out_channels, min(2 * out_channels, max_channels)
        # Registration order fixes the state-dict order: block0, block1, blocks_connected.
        self.block0, self.block1 = blocks[:2]
        self.blocks_connected = nn.ModuleDict({f"block{i}": block for i, block in enumerate(blocks) if i >= 2})

    def _blocks(self) -> list[UNetDownBlock]:
        return [self.block0, self.block1, *self.blocks_connected.values()]

    def forward(self, x: torch.Tensor, backbone_features: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        if backbone_features is not None:
            raise NotImplementedError("UNetEncoder: backbone features are not supported")
        outputs = []
        for block in self._blocks():
            features, x = block(x)
            outputs.append(features)
        return outputs[::-1]


class UNetUpBlock(nn.Module):
    """Upsample x2 + 3x3 conv, concatenate with the encoder skip, optional attention, double conv,
    optional control module (DucoNet) applied inside the mask resized to this stage.

    ``mask`` is the full-resolution mask or the mask already resized to the skip's size.
    """

    def __init__(self, in_channels_decoder: int, in_channels_encoder: int, out_channels: int,
                 norm_layer: NormLayer | None, activation: Activation, padding: int,
                 attention_layer: AttentionLayer | None,
                 control_module_layer: ControlModuleLayer | None = None, w_dim: int = 256) -> None:
        super().__init__()
        self.upconv = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            ConvBlock(in_channels_decoder, out_channels, kernel_size=3, stride=1, padding=1,
                      norm_layer=None, activation=activation),
        )
        self.convs = UNetDoubleConv(in_channels_encoder + out_channels, out_channels,
                                    norm_layer=norm_layer, activation=activation, padding=padding)
        self.attention = (attention_layer(in_channels_encoder + out_channels, norm_layer, activation)
                          if attention_layer is not None else None)
        self.control_module = (control_module_layer(w_dim=w_dim, feature_dim=out_channels)
                               if control_module_layer is not None else None)

    @property
    def use_control_module(self) -> bool:
        return self.control_module is not None

    def forward(self, x: torch.Tensor, encoder_out: torch.Tensor, mask: torch.Tensor,
                ws: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        x = torch.cat([encoder_out, self.upconv(x)], dim=1)
        if self.attention is not None:
            x = self.attention(x, mask)
        x = self.convs(x)
        if self.control_module is not None:
            if ws is None:
                raise ValueError("UNetUpBlock: this stage has a control module and needs ws={'w_l','w_a','w_b'}")
            x = self.control_module(x, ws["w_l"], ws["w_a"], ws["w_b"], resize_mask(mask, encoder_out.shape[-2:]))
        return x


def uses_control_module(stage: int, control_module_start: int) -> bool:
    """Official rule: -1 puts a control module on every decoder stage, otherwise stages >= start."""
    return control_module_start == -1 or stage >= control_module_start


class UNetDecoder(FastPathModule):
    """``depth - 1`` up blocks back to full resolution, then the output head.

    With ``image_fusion`` the head blends the (normalised) input image with a
    1x1-conv RGB prediction: ``a = sigmoid(3 * conv_attention(f))``,
    ``out = a * image + (1 - a) * to_rgb(f)``. The decoder convs always use
    ``norm_layer``; attention is applied on stages ``d >= attend_from``; control
    modules follow :func:`uses_control_module` when ``control_module_layer``
    is given. Fast path (``share_intermediates``): the mask is resized once per
    stage, for the attention and the control module together.
    """

    fast_path_options = ("share_intermediates",)

    def __init__(self, depth: int, encoder_blocks_channels: Sequence[int], norm_layer: NormLayer | None,
                 attention_layer: AttentionLayer | None = None, attend_from: int = 3, image_fusion: bool = False,
                 control_module_start: int = -1, control_module_layer: ControlModuleLayer | None = None,
                 w_dim: int = 256) -> None:
        super().__init__()
        self.up_blocks = nn.ModuleList()
        self.image_fusion = image_fusion
        # The official code pops from the encoder's own list; a copy leaves it intact.
        skip_channels = list(encoder_blocks_channels)
        in_channels = out_channels = skip_channels.pop()
        for d in range(depth - 1):
            out_channels = skip_channels.pop() if skip_channels else in_channels // 2
            self.up_blocks.append(UNetUpBlock(
                in_channels, out_channels, out_channels,
                norm_layer=norm_layer, activation=_relu, padding=1,
                attention_layer=attention_layer if 0 <= attend_from <= d else None,
                control_module_layer=(control_module_layer
                                      if control_module_layer is not None
                                      and uses_control_module(d, control_module_start) else None),
                w_dim=w_dim,
            ))
            in_channels = out_channels
        if image_fusion:
            self.conv_attention = nn.Conv2d(out_channels, 1, kernel_size=1)
        self.to_rgb = nn.Conv2d(out_channels, 3, kernel_size=1)

    def forward(self, encoder_outputs: Sequence[torch.Tensor], input_image: torch.Tensor, mask: torch.Tensor,
                ws: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        output = encoder_outputs[0]
        for block, skip in zip(self.up_blocks, encoder_outputs[1:]):
            stage_mask = resize_mask(mask, skip.shape[-2:]) if self.fast_path.share_intermediates else mask
            output = block(output, skip, stage_mask, ws)
        if not self.image_fusion:
            return self.to_rgb(output)
        attention_map = torch.sigmoid(3.0 * self.conv_attention(output))
        return attention_map * input_image + (1.0 - attention_map) * self.to_rgb(output)


def ssam_unet(depth: int, ch: int, norm_layer: NormLayer | None, batchnorm_from: int, max_channels: int,
              attend_from: int, attention_mid_k: float, image_fusion: bool, backbone_from: int = -1,
              backbone_channels: Sequence[int] | None = None, backbone_mode: str = "",
              control_module_layer: ControlModuleLayer | None = None, control_module_start: int = -1,
              w_dim: int = 256) -> tuple[UNetEncoder, UNetDecoder]:
    """The encoder and the Spatial-Separated-Attention decoder that iSSAM and DucoNet share
    (built in this order, as the official constructors do)."""
    encoder = UNetEncoder(depth, ch, norm_layer, batchnorm_from, max_channels,
                          backbone_from, backbone_channels, backbone_mode)
    decoder = UNetDecoder(depth, encoder.block_channels, norm_layer,
                          attention_layer=partial(SpatialSeparatedAttention, mid_k=attention_mid_k),
                          attend_from=attend_from, image_fusion=image_fusion,
                          control_module_start=control_module_start,
                          control_module_layer=control_module_layer, w_dim=w_dim)
    return encoder, decoder
