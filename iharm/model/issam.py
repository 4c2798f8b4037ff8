"""improved S2AM (iSSAM; Sofiiuk et al., WACV 2021, ``models/fixed256/improved_ssam.py``).

A U-Net with Spatial-Separated Attention and image fusion: exactly DucoNet's
RGB backbone without the Lab encoders and control modules, so its state dict
is DucoNet's ``encoder.*`` / ``decoder.*`` entries minus ``*.control_module.*``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from iharm.model.blocks import NormLayer
from iharm.model.fast_path import FastPathModule, channels_last_inputs, contiguous_outputs
from iharm.model.unet import ssam_unet


class SSAMImageHarmonization(FastPathModule):
    """iSSAM. ``forward(image, mask) -> {'images': out}`` in the normalised space of ``image``.

    The defaults are the published ``improved_ssam`` configuration (depth 4,
    ch 32, fusion, mid_k 0.5, attention and BatchNorm from stage/block 2).
    Fast path: ``channels_last`` (CPU inference in NHWC, outputs contiguous).
    """

    fast_path_options = ("channels_last",)

    def __init__(self, depth: int = 4, norm_layer: NormLayer | None = nn.BatchNorm2d, batchnorm_from: int = 2,
                 attend_from: int = 2, attention_mid_k: float = 0.5, image_fusion: bool = True,
                 ch: int = 32, max_channels: int = 512, backbone_from: int = -1,
                 backbone_channels: Sequence[int] | None = None, backbone_mode: str = "") -> None:
        super().__init__()
        self.depth = depth
        self.encoder, self.decoder = ssam_unet(depth, ch, norm_layer, batchnorm_from, max_channels,
                                               attend_from=attend_from, attention_mid_k=attention_mid_k,
                                               image_fusion=image_fusion, backbone_from=backbone_from,
                                               backbone_channels=backbone_channels, backbone_mode=backbone_mode)

    def forward(self, image: torch.Tensor, mask: torch.Tensor,
                backbone_features: Sequence[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        image, mask = channels_last_inputs(self, image, mask)
        intermediates = self.encoder(torch.cat((image, mask), dim=1), backbone_features)
        return contiguous_outputs({"images": self.decoder(intermediates, image, mask)})
