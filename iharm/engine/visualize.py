"""Image grids written during training: composite | mask | prediction | real."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from iharm.data.io import write_image


def harmonization_strip(composite: torch.Tensor, mask: torch.Tensor, prediction: torch.Tensor,
                        real: torch.Tensor) -> np.ndarray:
    """One sample as a uint8 HxWx3 RGB strip; images on 0..255 (3HW), mask in [0, 1] (1HW)."""
    panels = [composite, mask.expand(3, -1, -1) * 255, prediction, real]
    strip = torch.cat([p.detach().float().cpu().clamp(0, 255) for p in panels], dim=2)
    return strip.round().byte().permute(1, 2, 0).numpy()


def save_strip(path: Path, strip: np.ndarray, quality: int = 85) -> None:
    """Write a strip as a JPEG, atomically."""
    write_image(path, strip, quality)
