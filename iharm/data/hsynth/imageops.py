"""Image resizing and writing shared by the photo fetcher, the HSynth builder and
``scripts/prepare_iharmony4.py``, so that all of them resize and encode the same way.

The resize follows saic-vul/image_harmonization's ``notebooks/resize_hdataset.ipynb``
(the notebook that made the ``HAdobe5k_resized1024`` copy the 256 recipes train on):
the longest side becomes exactly ``max_side``, the other ``round(scale * side)``
with Python's ``round`` (ties to even), cv2 ``INTER_LANCZOS4``.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from iharm.data.io import encode_image, write_encoded

#: JPEG quality of HSynth composites, reals and fetched photos.
JPEG_QUALITY = 95


def fitted_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) after shrinking so that the longest side is at most ``max_side``.

    An image already small enough keeps its size.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    if max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    if height > width:
        return int(round(scale * width)), max_side
    return max_side, int(round(scale * height))


def downscale_to_max_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink ``image`` (any channel count) with LANCZOS4 so its longest side is <= ``max_side``.

    Returns the input object itself when no resize is needed.
    """
    height, width = image.shape[:2]
    size = fitted_size(width, height, max_side)
    if size == (width, height):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_LANCZOS4)


def write_jpeg(path: str | os.PathLike, rgb: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """Write an RGB uint8 image as a baseline JPEG of the given quality, atomically."""
    write_encoded(path, encode_image(path, rgb, [cv2.IMWRITE_JPEG_QUALITY, quality]))


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a uint8 image (HxW, or HxWxC in cv2's BGR order) as PNG with cv2's defaults, atomically."""
    write_encoded(path, encode_image(path, image, rgb=False))
