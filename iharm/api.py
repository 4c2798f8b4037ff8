"""The one-call Python API: harmonize your own composite at its own size, score its harmony.

    >>> import numpy as np
    >>> from iharm import Harmonizer
    >>> harmonize = Harmonizer("DucoNet", device="cpu")   # the shipped checkpoints/hsynth/DucoNet_hsynth.pth
    >>> image = np.full((300, 400, 3), (90, 140, 200), np.uint8)       # or a path, or a PIL image
    >>> mask = np.zeros((300, 400), bool)
    >>> mask[100:220, 150:260] = True                                  # or a path, uint8 0..255, float 0..1
    >>> image[mask] = (200, 120, 60)                                   # a pasted foreground of another colour
    >>> result = harmonize(image, mask)
    >>> result.shape, result.dtype
    ((300, 400, 3), dtype('uint8'))
    >>> bool((result[~mask] == image[~mask]).all())                  # the background is the input, bit for bit
    True

Inputs are what a practitioner has at hand: an image as a path, a PIL image or
a numpy uint8 HxWx3 RGB array; a mask as a path or an HxW array (uint8 0..255,
bool, or float in [0, 1]). The output is computed as ``predict_for_dir.py``
computes it (:func:`~iharm.inference.full_resolution.harmonize_full_resolution`):
the model runs at 256 x 256, its colour correction is carried to the full
resolution, and every pixel where the mask is 0 is the input pixel, bit for
bit. Masks are binarised at 100/255 as the official script does
(``mask_threshold=None`` keeps soft masks). Bad input raises ``ValueError``
naming what is wrong (a path: :class:`~iharm.data.errors.DataError`, which is
one), before the network runs.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from iharm.data.io import mask_problem, read_image, read_mask
from iharm.inference.predictor import PRECISION_CHOICES, build_predictor
from iharm.inference.full_resolution import Method, WorkingResolution, harmonize_full_resolution
from iharm.inference.harmony_score import HarmonyResult, HarmonyScorer
from iharm.inference.predictor import PRECISIONS
from iharm.model.registry import get_model_spec
from iharm.utils.device import resolve_device

ImageLike = Union[np.ndarray, Image.Image, str, os.PathLike]
MaskLike = Union[np.ndarray, Image.Image, str, os.PathLike]

#: The official predict_for_dir.py keeps mask pixels above 100 (of 255) as foreground.
OFFICIAL_MASK_THRESHOLD = 100 / 255
#: Where shipped weights lie (``checkpoints/hsynth/<model>_hsynth.pth``), the default checkpoint.
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "checkpoints" / "hsynth"


def as_image(image: ImageLike) -> np.ndarray:
    """An image as uint8 HxWx3 RGB: a path (read as every tool reads it), a PIL image or a numpy array."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        if image.mode not in ("RGB", "L", "P") and not (image.mode == "RGBA" and image.getextrema()[3][0] == 255):
            raise ValueError(f"image: a PIL image in mode {image.mode} (with transparency or not 8-bit colour); "
                             "give an RGB image")
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image: expected a path, a PIL image or a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image: dtype {image.dtype}; expected uint8 RGB values 0..255")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: shape {image.shape}; expected HxWx3 RGB (3 channels)")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"image: shape {image.shape} is empty")
    return image


def as_mask(mask: MaskLike, shape: tuple[int, int]) -> np.ndarray:
    """A mask as float32 HxW in [0, 1], checked against the image's (H, W) ``shape``.

    uint8 masks are divided by 255, bool masks are 0/1, float masks must lie in
    [0, 1]; an HxWx1 array is accepted as HxW.
    """
    if isinstance(mask, (str, os.PathLike)):
        values = read_mask(mask)
    else:
        array = np.asarray(mask.convert("L")) if isinstance(mask, Image.Image) else mask
        if not isinstance(array, np.ndarray):
            raise ValueError(f"mask: expected a path, a PIL image or a numpy array, got {type(mask).__name__}")
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        if array.ndim != 2:
            raise ValueError(f"mask: shape {array.shape}; expected HxW (one channel)")
        if array.dtype == np.bool_:
            values = array.astype(np.float32)
        elif array.dtype == np.uint8:
            values = array.astype(np.float32) / 255.0
        elif np.issubdtype(array.dtype, np.floating):
            if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
                raise ValueError(f"mask: float values must lie in [0, 1], got [{np.nanmin(array):g}, "
                                 f"{np.nanmax(array):g}]{' and NaN/inf' if not np.isfinite(array).all() else ''}")
            values = array.astype(np.float32)
        else:
            raise ValueError(f"mask: dtype {array.dtype}; expected uint8 (0..255), bool or float in [0, 1]")
    if values.shape != tuple(shape):
        raise ValueError(f"mask: {values.shape[1]}x{values.shape[0]} does not match the image "
                         f"{shape[1]}x{shape[0]}; masks must have the image's size")
    return values


def threshold_mask(mask: np.ndarray, threshold: float | None, invert: bool = False) -> np.ndarray:
    """A float HxW mask binarised at ``threshold`` (None: kept soft), then inverted if asked (``1 - mask``:
    harmonize the background to the foreground)."""
    if threshold is not None:
        # Compare in float32, the mask's type: 100/255 in float64 is below the float32 value of a
        # stored 100, which would then count as foreground unlike the official `> 100`.
        mask = (mask > np.float32(threshold)).astype(np.float32)
    return 1.0 - mask if invert else mask


def default_checkpoint(model: str) -> Path:
    """The shipped weights of ``model`` (``checkpoints/hsynth/<model>_hsynth.pth``); ValueError if none ship."""
    path = SHIPPED_DIR / f"{model}_hsynth.pth"
    if not path.is_file():
        raise ValueError(f"no checkpoint given and none shipped for {model} ({path} does not exist); "
                         "pass checkpoint='path/to/weights.pth'")
    return path


class Harmonizer:
    """A loaded model that harmonizes composites: ``Harmonizer(model, checkpoint)(image, mask)``.

    ``model`` is a registered name (DucoNet, iSSAM, BargainNet); ``checkpoint``
    a weights file (default: the shipped HSynth weights); ``device`` 'auto',
    'cpu' or 'cuda[:N]'; ``precision`` 'fp32' (exact), 'bf16' or 'fp16' (CUDA).
    ``resize`` / ``resize_mode`` / ``method`` / ``keep_background`` /
    ``mask_threshold`` / ``invert_mask`` are predict_for_dir.py's ``--resize``,
    ``--resize-mode``, ``--method``, ``--keep-background``, ``--mask-threshold``
    (None: soft) and ``--invert-mask``; that command runs through this class.
    ``score_checkpoint`` names BargainNet weights for :meth:`harmony_score`
    (default: the model's own when it is BargainNet).
    """

    def __init__(self, model: str = "DucoNet", checkpoint: str | os.PathLike | None = None, device: str = "auto",
                 precision: str = "fp32", resize: int | None = 256, resize_mode: str = "fixed",
                 method: Method = "affine", keep_background: bool = True,
                 mask_threshold: float | None = OFFICIAL_MASK_THRESHOLD, invert_mask: bool = False,
                 score_checkpoint: str | os.PathLike | None = None) -> None:
        get_model_spec(model)  # KeyError naming the registered models, before anything loads
        if PRECISION_CHOICES.get(precision, precision) not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISION_CHOICES)}")
        if mask_threshold is not None and not 0.0 <= mask_threshold < 1.0:
            raise ValueError(f"mask_threshold {mask_threshold}: expected a number in [0, 1) or None (soft masks)")
        self.resolution = WorkingResolution(resize, resize_mode)  # ValueError for a bad size or mode
        self.device = resolve_device(device)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else default_checkpoint(model)
        self.model_name, self.method, self.keep_background = model, method, keep_background
        self.mask_threshold, self.invert_mask = mask_threshold, invert_mask
        self.predictor = build_predictor(model, self.checkpoint, self.device, precision=precision)
        self._score_checkpoint = score_checkpoint or (self.checkpoint if model == "BargainNet" else None)
        self._scorer: HarmonyScorer | None = None

    def prepare(self, image: ImageLike, mask: MaskLike) -> tuple[np.ndarray, np.ndarray]:
        """The checked inputs of one call: (uint8 HxWx3 RGB, float32 HxW mask, thresholded and inverted as
        configured); ValueError names what is wrong."""
        rgb = as_image(image)
        values = threshold_mask(as_mask(mask, rgb.shape[:2]), self.mask_threshold, self.invert_mask)
        problem = mask_problem(values > 0, values < 1)
        if problem is not None:
            raise ValueError(problem)
        return rgb, values

    def __call__(self, image: ImageLike, mask: MaskLike) -> np.ndarray:
        """The harmonized composite, uint8 HxWx3 RGB at the input's size."""
        return self.harmonize_prepared(*self.prepare(image, mask))

    def harmonize_prepared(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The harmonized composite of inputs that :meth:`prepare` returned."""
        return harmonize_full_resolution(self.predictor, rgb, mask, self.resolution, self.method,
                                         self.keep_background)

    def harmonize_many(self, pairs: Iterable[tuple[ImageLike, MaskLike]]) -> Iterator[np.ndarray]:
        """Harmonize ``(image, mask)`` pairs one after another, yielding each result as it is ready."""
        for image, mask in pairs:
            yield self(image, mask)

    def batch(self, images: Iterable[ImageLike], masks: Iterable[MaskLike]) -> list[np.ndarray]:
        """Harmonize lists of images and masks (of any sizes); ValueError if their lengths differ."""
        images, masks = list(images), list(masks)
        if len(images) != len(masks):
            raise ValueError(f"batch: {len(images)} images but {len(masks)} masks")
        prepared = [self.prepare(image, mask) for image, mask in zip(images, masks)]  # all checked first
        return [self.harmonize_prepared(rgb, values) for rgb, values in prepared]

    def harmony_score(self, image: ImageLike, mask: MaskLike) -> HarmonyResult:
        """BargainNet's harmony score of a composite (see :mod:`iharm.inference.harmony_score`)."""
        if self._score_checkpoint is None:
            raise ValueError(f"harmony_score needs BargainNet weights: this Harmonizer runs {self.model_name}; "
                             "pass score_checkpoint='BargainNet weights' to Harmonizer()")
        if self._scorer is None:
            self._scorer = HarmonyScorer.from_checkpoint(self._score_checkpoint, self.device)
        return _score(self._scorer, image, mask)


def _score(scorer: HarmonyScorer, image: ImageLike, mask: MaskLike) -> HarmonyResult:
    rgb = as_image(image)
    return scorer.score(rgb, as_mask(mask, rgb.shape[:2]))


def harmony_score(image: ImageLike, mask: MaskLike, checkpoint: str | os.PathLike | None = None,
                  device: str = "auto") -> HarmonyResult:
    """BargainNet's harmony score of one composite, with ``checkpoint`` (default: the shipped BargainNet).

    Loads the domain code extractor for this one call; for many images make a
    ``Harmonizer("BargainNet", checkpoint)`` and call its :meth:`~Harmonizer.harmony_score`.
    """
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint("BargainNet")
    return _score(HarmonyScorer.from_checkpoint(path, resolve_device(device)), image, mask)
