"""On-the-fly HSynth: a fresh composite for every training sample, drawn from the photo pool.

A fixed HSynth build shows each training photo with the same 4 composites in
every epoch; a small CPU run sees them 7-19 times and fits them. Here every
sample draws, with the HSynth builder's own code, a new mask
(the builder's mask kinds and code, :mod:`~iharm.data.hsynth.masks`) and a new appearance change
(:func:`~iharm.data.hsynth.builder.make_composite`, with the same fMSE and hue
checks), so no composite is ever shown twice; the crop and flip come after, from
the training augmentation.

* **No test photo is drawn.** The photos are those of ``photos_dir`` minus
  every photo of the fixed HSynth-test split (``test_dataset``, split by photo)
  and minus every photo of the same near-duplicate group as one of them.
* **Exact resume.** A sample depends only on its seed, which the seeded sampler
  derives from (seed, epoch, index): an interrupted and resumed run draws what
  the uninterrupted run drew, whatever the worker count.
* **Evaluation's scale.** Photos are held in memory resized to ``size`` x
  ``size`` as the ``Fixed<size>`` evaluation resizes (bilinear), and masks and
  changes are made at that size, so a sample costs milliseconds, not the
  seconds of a full-resolution build.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from iharm.data.errors import DataError
from iharm.data.hdataset import BaseHDataset, read_list
from iharm.data.hsynth import masks
from iharm.data.hsynth.builder import (Photo, discover_photos, draw_donor, draw_mask_kind, given_mask,
                                      make_composite, photo_rng)
from iharm.data.io import read_image
from iharm.data.layout import real_name

#: A sample draws up to this many masks until one passes the area and appearance checks.
MASK_TRIES = 4
#: Side of the copy of a photo that masks are made on (then upsampled to ``size``).
MASK_SIDE = 128
#: Object masks (GrabCut, the slow kind) per photo in the bank they are drawn from.
OBJECT_BANK = 8
#: Share of the samples of a photo with its own mask (``<stem>_mask.png``) that use that mask.
GIVEN_MASK_SHARE = 0.5
#: Stream of a sample's seed that the synthesis draws from (the augmentation draws from the seed itself).
_SYNTH_STREAM = 0x5EED


def hsynth_test_photos(test_dataset: str | os.PathLike) -> set[str]:
    """Names of the photos (real images) of the ``test`` split of an HSynth folder."""
    return {Path(real_name(entry.name)).stem for entry in read_list(test_dataset, "test")}


def training_photos(photos_dir: Path, test_dataset: str | os.PathLike) -> tuple[list[Photo], int]:
    """(the photos of ``photos_dir`` that may be trained on, how many were left out as test photos).

    A photo is left out when it is a test photo of ``test_dataset`` or shares a
    near-duplicate group (``manifest.tsv``) with one.
    """
    photos = discover_photos(photos_dir)
    test = hsynth_test_photos(test_dataset)
    if not test & {photo.name for photo in photos}:
        raise DataError(photos_dir, f"holds none of the {len(test)} test photos of {test_dataset}: it is not the "
                                    "photo pool that dataset was built from, so its test split cannot be kept out")
    test_groups = {photo.group for photo in photos if photo.name in test}
    kept = [photo for photo in photos if photo.name not in test and photo.group not in test_groups]
    if not kept:
        raise DataError(photos_dir, f"every photo is a test photo of {test_dataset} (or in a test photo's group)")
    return kept, len(photos) - len(kept)


def _fixed_size(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` resized to ``size`` x ``size`` as ``Fixed<size>`` resizes (``A.Resize``: bilinear)."""
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


class LiveHSynth(BaseHDataset):
    """HSynth-train composites synthesised per sample (``LiveHSynth(photos, hsynth, size=256)``).

    ``len()`` is ``per_photo`` samples of every training photo per epoch; index
    ``i`` is a composite of photo ``i % photo count``. Samples carry the usual
    keys (``image``, ``target_image``, ``mask``, ``name``); the name
    ``<photo>_<index>_live`` says which photo it came from. Keyword arguments go
    to :class:`~iharm.data.hdataset.BaseHDataset` (augmentator, Lab mode, ...).

    Masks are made on a ``mask_side`` px copy (default :data:`MASK_SIDE`, at most
    ``size``) and upsampled with a smooth edge (the builder makes them at 384 px
    for 1024 px photos). Region, blob and silhouette masks are drawn anew for
    every sample; object masks (GrabCut: 75 ms at 128 px against 14 ms for a
    region, Intel Xeon with AMX, one thread) come from a bank of
    :data:`OBJECT_BANK` per photo, each made once, on first use, from the seed,
    the photo and its slot, so they too depend on nothing but the seed.
    """

    def __init__(self, photos_dir: str | os.PathLike, test_dataset: str | os.PathLike, size: int = 256,
                 per_photo: int = 4, seed: int = 0, mask_side: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if size < 32:
            raise ValueError(f"size must be >= 32, got {size}")
        mask_side = min(MASK_SIDE, size) if mask_side is None else mask_side
        if not 32 <= mask_side <= size:
            raise ValueError(f"mask_side must lie in [32, size={size}], got {mask_side}")
        if per_photo < 1:
            raise ValueError(f"per_photo must be >= 1, got {per_photo}")
        self.photos, self.excluded = training_photos(Path(photos_dir), test_dataset)
        self.size, self.per_photo, self.seed = size, per_photo, seed
        self.images = {photo.name: _fixed_size(read_image(photo.path), size) for photo in self.photos}
        self.small = {name: cv2.resize(image, (mask_side, mask_side), interpolation=cv2.INTER_AREA)
                      for name, image in self.images.items()}
        self.given = {photo.name: given_mask(photo, (size, size))
                      for photo in self.photos if photo.mask_path is not None}
        groups = {photo.group for photo in self.photos}
        self._references = {group: tuple(p for p in self.photos if p.group != group) for group in groups}
        self._object_masks: dict[tuple[str, int], np.ndarray] = {}
        self.problems: list[str] = []

    def __len__(self) -> int:
        return self.per_photo * len(self.photos)

    def reference_image(self, photo: Photo) -> np.ndarray:
        """The float RGB copy of a training photo that colour statistics are taken from."""
        return self.images[photo.name].astype(np.float32) / 255.0

    def object_mask(self, photo: Photo, slot: int) -> np.ndarray:
        """Object mask ``slot`` of a photo's bank (boolean, ``mask_side`` px), made on first use."""
        key = (photo.name, slot)
        if key not in self._object_masks:
            try:
                mask, _, _ = masks.make_mask(self.small[photo.name], photo_rng(self.seed, photo.name, 3, slot),
                                             "object")
            except RuntimeError:  # no acceptable area even as a blob: an empty slot, redrawn by the sample
                mask = np.zeros(self.small[photo.name].shape[:2], np.uint8)
            self._object_masks[key] = mask > 0
        return self._object_masks[key]

    def draw_mask(self, photo: Photo, rng: np.random.Generator) -> np.ndarray:
        """A uint8 0/255 ``size`` px mask for a sample of ``photo``."""
        if photo.name in self.given and rng.random() < GIVEN_MASK_SHARE:
            return self.given[photo.name]
        kind = draw_mask_kind(rng, photo)
        if kind == "object":
            small = self.object_mask(photo, int(rng.integers(OBJECT_BANK)))
        else:
            silhouette = None
            if kind == "silhouette":
                silhouette = self.object_mask(draw_donor(rng, photo, self._references[photo.group]), 0)
                if not silhouette.any():  # the donor's first bank slot is empty
                    kind, silhouette = "blob", None
            try:
                small = masks.make_mask(self.small[photo.name], rng, kind, silhouette)[0] > 0
            except RuntimeError:  # no acceptable area even as a blob (small copies): redrawn by the sample
                small = np.zeros(self.small[photo.name].shape[:2], bool)
        return masks.upsample_mask(small, (self.size, self.size))

    def get_sample(self, index: int, seed: int | None = None) -> dict[str, Any]:
        photo = self.photos[index % len(self.photos)]
        rng = np.random.default_rng([_SYNTH_STREAM, self.seed, index] if seed is None else [_SYNTH_STREAM, seed])
        image = self.images[photo.name]
        for _ in range(MASK_TRIES):
            mask = self.draw_mask(photo, rng)
            if not masks.area_ok(mask):  # no mask at this size, or upsampling moved its area: draw another
                continue
            made = make_composite(image, mask, rng, self._references[photo.group], self.reference_image)
            if made is not None:
                return {"image": made[1], "target_image": image, "mask": mask.astype(np.float32) / 255.0,
                        "name": f"{photo.name}_{index}_live"}
        raise DataError(photo.path, f"no acceptable composite in {MASK_TRIES} masks (sample {index})")
