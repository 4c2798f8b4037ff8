"""Colour conversion exactly as the official DucoNet pipeline does it."""
from __future__ import annotations

import cv2
import numpy as np


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """OpenCV 8-bit Lab of a uint8 RGB image: L*255/100, a+128, b+128 (D65).

    ``cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)`` is what the official ``HDataset``
    computes, and what the official checkpoints were trained on; skimage's
    ``rgb2lab`` quantised to 8 bits differs by one level on ~9 % of values.
    The input must be RGB (the official ``predict_for_dir.py`` passed BGR here).
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb_to_lab expects a uint8 HxWx3 RGB array, got {rgb.dtype} {rgb.shape}")
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
