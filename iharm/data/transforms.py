"""Joint augmentation of composite, real image, mask and Lab image.

``HCompose`` applies one random draw of every transform to all four arrays
together. Masks are interpolated bilinearly as float (soft edges), which is what
the published DucoNet / iSSAM results were trained and evaluated with: their
``HCompose`` switched masks to the image interpolation, a trick that worked with
albumentations <= 1.3 and silently became nearest-neighbour from 1.4 on.
albumentations 2.x exposes the choice directly (``mask_interpolation``), so we
set it instead of patching internals.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np


class LongestMaxSizeIfLarger(A.LongestMaxSize):
    """Downscale so that the longest side is ``max_size``; leave smaller images as they are.

    The official ``LimitLongest1024`` strategy; new sides are ``round(side * scale)``.
    """

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        return {"scale": min(1.0, self.max_size / max(height, width))}


#: The evaluation resize strategies of the official ``evaluate_model.py``.
RESIZE_STRATEGIES = ("None", "LimitLongest1024", "Fixed256", "Fixed512", "Fixed1024")


def resize_transform(strategy: str) -> A.BasicTransform:
    """The albumentations transform of a named resize strategy."""
    if strategy == "None":
        return A.NoOp()
    if strategy == "LimitLongest1024":
        return LongestMaxSizeIfLarger(max_size=1024)
    if strategy.startswith("Fixed") and strategy in RESIZE_STRATEGIES:
        size = int(strategy[len("Fixed"):])
        return A.Resize(size, size)
    raise ValueError(f"unknown resize strategy '{strategy}' (choose from {', '.join(RESIZE_STRATEGIES)})")


class HCompose(A.Compose):
    """``albumentations.Compose`` over ``image``, ``target_image``, ``mask`` and ``image_lab``.

    Only spatial transforms are accepted: a pixel-level transform (colour jitter,
    blur) would also change the real image and the Lab image, which are the
    targets and the Lab input of the same scene.
    """

    def __init__(self, transforms: Sequence[A.BasicTransform],
                 mask_interpolation: int = cv2.INTER_LINEAR) -> None:
        for transform in transforms:
            if isinstance(transform, A.ImageOnlyTransform):
                raise ValueError(f"HCompose: {type(transform).__name__} is a pixel-level transform; "
                                 "only spatial transforms (crop, flip, resize) keep composite and target aligned")
        super().__init__(list(transforms), additional_targets={"target_image": "image", "image_lab": "image"},
                         mask_interpolation=mask_interpolation)

    def apply_to_sample(self, sample: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Transform a sample dict (``image``, ``target_image``, ``mask``, optional ``image_lab``)."""
        inputs = {key: sample[key] for key in ("image", "target_image", "mask", "image_lab") if key in sample}
        return self(**inputs)


def flip_and_crop(size: int, crop_scale: tuple[float, float] | None) -> HCompose:
    """``RandomResizedCrop(size, scale=crop_scale)`` (``crop_scale`` None: the whole image resized to
    ``size`` x ``size``), then a random horizontal flip: the augmentation of the time-bounded recipes."""
    crop = A.RandomResizedCrop(size=(size, size), scale=crop_scale) if crop_scale else A.Resize(size, size)
    return HCompose([crop, A.HorizontalFlip()])
