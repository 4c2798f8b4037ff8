"""BargainNet's harmony score: how well a composite's foreground fits its background.

BargainNet's domain code extractor E maps a region of an image to a 16-d code
of its "domain" (illumination, colour cast, ...). The *inharmony level* of a
composite is the Euclidean distance between the codes of its background and
its foreground, ``d = ||E(comp, 1 - mask) - E(comp, mask)||_2``; the *harmony
score* is ``exp(-0.04212 * d)`` in (0, 1], higher is more harmonious.

Preprocessing follows the official ``predict_harmony_score.py`` exactly: the
image and the uint8 masks are resized to 256x256 with PIL bilinear, the image
normalised to [-1, 1], the masks kept soft (0..255 -> 0..1, not binarised), the
background mask computed as ``255 - mask`` before resizing, and E run in eval
mode. Unlike the official script this runs on the CPU as well, names the file
of every bad input, and rounds only for display.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from iharm.data.errors import DataError
from iharm.data.io import mask_problem, read_image, read_mask
from iharm.data.normalization import SYMMETRIC
from iharm.model.bargainnet import StyleEncoder, load_style_encoder

#: Decay of the official score ``exp(-0.04212 * d)`` (its origin is not documented).
HARMONY_SCORE_DECAY = 0.04212
#: E sees every composite at this size, as in the official script.
SCORE_SIZE = 256


class MaskSizeWarning(UserWarning):
    """The mask's size differs from the image's; both are stretched to 256x256 as the official script does."""


def harmony_score(distance: float | torch.Tensor) -> float | torch.Tensor:
    """``exp(-0.04212 * distance)``: 1 for identical codes, 0.5 at a distance of about 16.46."""
    if torch.is_tensor(distance):
        return torch.exp(-HARMONY_SCORE_DECAY * distance)
    return math.exp(-HARMONY_SCORE_DECAY * distance)


def inharmony_level(encoder: StyleEncoder, image: torch.Tensor, fg_mask: torch.Tensor,
                    bg_mask: torch.Tensor) -> torch.Tensor:
    """``||E(image, bg_mask) - E(image, fg_mask)||_2`` per sample (B,), with E in eval mode.

    In train mode BatchNorm would normalise with the statistics of this one
    region, which changes the codes; the official script always uses eval mode.
    """
    if encoder.training:
        raise ValueError("inharmony_level: the encoder is in train mode; call encoder.eval() first")
    with torch.no_grad():
        difference = encoder(image, bg_mask) - encoder(image, fg_mask)
    return torch.linalg.vector_norm(difference.flatten(1), dim=1)


def score_mask_problem(mask: np.ndarray) -> str | None:
    """Why a soft mask cannot give a harmony score (no foreground or no background weight), or None."""
    return mask_problem(mask > 0, mask < (255 if mask.dtype == np.uint8 else 1.0))


def prepare_inputs(image_rgb: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The official preprocessing: (image (1,3,256,256) in [-1,1], fg mask, bg mask (1,1,256,256) in [0,1]).

    ``image_rgb`` is uint8 HxWx3 RGB. ``mask`` is HxW, uint8 0..255 or float in
    [0, 1] (as :func:`iharm.data.io.read_mask` returns; 8-bit masks round-trip
    exactly). Image and mask are resized independently, so their sizes may differ.
    """
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"image must be uint8 HxWx3 RGB, got {image_rgb.dtype} {image_rgb.shape}")
    if mask.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {mask.shape}")
    if mask.dtype != np.uint8:
        mask = np.rint(np.clip(mask, 0.0, 1.0) * 255.0).astype(np.uint8)
    size = (SCORE_SIZE, SCORE_SIZE)
    image = np.asarray(Image.fromarray(image_rgb).resize(size, Image.BILINEAR))
    image_t = SYMMETRIC.normalize(torch.from_numpy(image.copy()).permute(2, 0, 1)[None])

    def resized(region: np.ndarray) -> torch.Tensor:
        pixels = np.asarray(Image.fromarray(region).resize(size, Image.BILINEAR))
        return torch.from_numpy(pixels.copy()).float().div(255)[None, None]

    return image_t, resized(mask), resized(255 - mask)


@dataclass(frozen=True)
class HarmonyResult:
    """Inharmony level ``d`` and the unrounded harmony score ``exp(-0.04212 d)`` of one composite."""

    inharmony_level: float
    harmony_score: float

    @property
    def rounded_score(self) -> float:
        """The score to 2 decimals, as the official script prints it."""
        return round(self.harmony_score, 2)


class HarmonyScorer:
    """Scores composites with one domain code extractor, on one device."""

    def __init__(self, encoder: StyleEncoder, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device '{device}': CUDA is not available on this machine; use 'cpu'")
        self.encoder = encoder.to(self.device).eval()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> HarmonyScorer:
        """E from our BargainNet file, an official ``latest_net_E.pth`` / folder, or libcom's ``BargainNet.pth``."""
        return cls(load_style_encoder(path), device)

    def score(self, image_rgb: np.ndarray, mask: np.ndarray) -> HarmonyResult:
        """Score one composite: uint8 HxWx3 RGB image, HxW mask (see :func:`prepare_inputs`)."""
        problem = score_mask_problem(mask)
        if problem:
            raise ValueError(problem)
        return self._score(image_rgb, mask)

    def _score(self, image_rgb: np.ndarray, mask: np.ndarray) -> HarmonyResult:
        image, fg_mask, bg_mask = (t.to(self.device) for t in prepare_inputs(image_rgb, mask))
        distance = float(inharmony_level(self.encoder, image, fg_mask, bg_mask)[0])
        return HarmonyResult(inharmony_level=distance, harmony_score=harmony_score(distance))

    def score_files(self, image_path: str | os.PathLike, mask_path: str | os.PathLike,
                    strict_mask_size: bool = False) -> HarmonyResult:
        """Score an image file with its mask file; bad files raise :class:`DataError` naming them.

        A mask of another size than the image is stretched to 256x256 like the
        image (the official behaviour) with a :class:`MaskSizeWarning`, or refused
        with ``strict_mask_size``.
        """
        image = read_image(image_path)
        mask = read_mask(mask_path)
        if mask.shape != image.shape[:2]:
            (mask_h, mask_w), (image_h, image_w) = mask.shape, image.shape[:2]
            aspect = ("; the aspect ratios differ, so the mask is stretched"
                      if abs(mask_w / mask_h - image_w / image_h) > 0.01 else "")
            message = (f"mask is {mask_w}x{mask_h} but the image {image_path} is {image_w}x{image_h}{aspect}; "
                       "check that the mask belongs to this image")
            if strict_mask_size:
                raise DataError(mask_path, message)
            warnings.warn(MaskSizeWarning(f"{mask_path}: {message} (both are resized to "
                                          f"{SCORE_SIZE}x{SCORE_SIZE} independently, as the official script does)"),
                          stacklevel=2)
        problem = score_mask_problem(mask)
        if problem:
            raise DataError(mask_path, problem)
        return self._score(image, mask)
