"""Derived HSynth folders for quick training: a resized working copy and transform-family filters.

Training on a small CPU spends much of its time decoding and resizing 1024 px
JPEGs; :func:`write_working_copy` does that once. It writes the composites of
one split of an HSynth folder, with their real images and masks, resized to
``size x size`` exactly as the evaluation's ``Fixed<size>`` strategy resizes
them (:func:`iharm.data.transforms.resize_transform`: composite, real image and
mask together, bilinear, the mask as float), in the same iHarmony4 layout and
names. With ``exclude_families`` the composites whose transform family
(``meta.tsv``) is listed are left out: the training set of a held-out-family
test. A copy holds one split, so a training folder cannot leak test images.
"""
from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from iharm.data import layout
from iharm.data.hdataset import HDataset
from iharm.data.hsynth.builder import META_NAME, read_meta
from iharm.data.hsynth.imageops import JPEG_QUALITY, write_jpeg, write_png
from iharm.data.transforms import HCompose, resize_transform

#: Name of the file in a working copy that records how it was made (a rebuild is skipped when it matches).
PROVENANCE_NAME = "working_copy.txt"


def family_of(meta_path: Path) -> dict[str, str]:
    """``{composite file name: transform family}`` from an HSynth ``meta.tsv``."""
    return {row["composite"]: row["family"] for row in read_meta(meta_path)}


def select_composites(names: list[str], families: dict[str, str], exclude_families: Collection[str]) -> list[str]:
    """``names`` without the composites of ``exclude_families`` (order kept).

    A name missing from ``families`` or an excluded family that no composite
    has is an error: a typo would otherwise silently hold out nothing.
    """
    unknown = [name for name in names if name not in families]
    if unknown:
        raise KeyError(f"{len(unknown)} composites are not in meta.tsv (first: {unknown[0]})")
    absent = sorted(set(exclude_families) - set(families[name] for name in names))
    if absent:
        raise ValueError(f"no composite of family {', '.join(absent)} in this list "
                         f"(families: {', '.join(sorted(set(families.values())))})")
    return [name for name in names if families[name] not in exclude_families]


def write_working_copy(source: Path, dest: Path, size: int, split: str = "train",
                       exclude_families: Collection[str] = ()) -> int:
    """Write ``dest`` (subset name ``dest.name``) from the ``split`` composites of HSynth folder ``source``,
    resized to ``size`` x ``size`` by the evaluation's ``Fixed<size>`` strategy (256, 512 or 1024).

    Returns the number of composites written. The list is ``<dest.name>_<split>.txt``.
    An existing ``dest`` made with the same arguments is reused as it is.
    """
    provenance = (f"source={source.resolve()}\nsplit={split}\nsize={size}\n"
                  f"exclude_families={','.join(sorted(exclude_families))}\n")
    list_file = layout.list_path(dest, split)
    if (dest / PROVENANCE_NAME).is_file() and (dest / PROVENANCE_NAME).read_text() == provenance \
            and list_file.is_file():
        return len(list_file.read_text().split())
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and was made differently (see {PROVENANCE_NAME}); remove it first")
    dataset = HDataset(source, split, augmentator=HCompose([resize_transform(f"Fixed{size}")]), lab="none")
    families = family_of(source / META_NAME)
    chosen = set(select_composites([entry.name for entry in dataset.entries], families, exclude_families))
    for folder in layout.SUBFOLDERS:
        (dest / folder).mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for index, entry in enumerate(dataset.entries):
        if entry.name not in chosen:
            continue
        sample = dataset.augment_sample(dataset.get_sample(index), np.random.default_rng(0))
        write_jpeg(dest / "composite_images" / entry.name, sample["image"], JPEG_QUALITY)
        write_jpeg(dest / "real_images" / layout.real_name(entry.name), sample["target_image"], JPEG_QUALITY)
        write_png(dest / "masks" / layout.mask_name(entry.name),
                  np.round(np.clip(sample["mask"], 0.0, 1.0) * 255).astype(np.uint8))
        written.append(entry.name)
    list_file.write_text("".join(f"{name}\n" for name in written))
    (dest / PROVENANCE_NAME).write_text(provenance)
    return len(written)
