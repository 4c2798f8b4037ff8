"""Preparing a downloaded iHarmony4: root lists for BargainNet and the resized HAdobe5k.

* :func:`write_root_lists` writes ``IHD_train.txt`` / ``IHD_test.txt``
  (``<Sub>/composite_images/<file>`` a line) from the subsets' own lists:
  BargainNet reads those instead of the per-subset lists.
* :func:`resize_subset` makes ``HAdobe5k_resized1024`` the way saic-vul's
  ``notebooks/resize_hdataset.ipynb`` did, which the published 256 recipes
  trained on: every ``*.jpg`` and ``*.png`` read with ``cv2.IMREAD_UNCHANGED``;
  files with a longest side <= ``max_side`` copied byte for byte; larger ones
  resized with INTER_LANCZOS4 to a longest side of exactly ``max_side`` and
  the other side ``round(scale * side)``, JPEGs written at quality 90 and PNGs
  with cv2's defaults; the ``*.txt`` lists copied.

  Masks: the notebook resizes the PNG masks with LANCZOS4 like the photos (a
  mask must keep its image's size), so their outlines become soft (values
  between 0 and 255, plus clipped ringing next to the edge). We do the same,
  so that the data match the published training data; HDataset reads masks
  soft (value / 255) anyway, and check_dataset.py reports them as a note, not
  an error. EXIF orientation is not applied (IMREAD_UNCHANGED), as in the
  notebook; HAdobe5k's files carry none.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import shutil
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from iharm.data import layout
from iharm.data.errors import DataError
from iharm.data.hsynth.imageops import downscale_to_max_side
from iharm.data.io import encode_image, write_encoded
from iharm.utils.files import atomic_write_text

#: JPEG quality of resized JPEGs (the notebook's).
RESIZED_JPEG_QUALITY = 90


def default_subsets(root: Path) -> list[str]:
    """Subset folders of ``root`` in name order, without resized copies (``*_resized<N>``),
    which hold the same composites as their source and would list them twice."""
    if not root.is_dir():
        raise DataError(root, "dataset root not found")
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and layout.is_subset_dir(p) and not layout.is_resized_copy(p.name))


def _list_entries(path: Path) -> list[str]:
    """Entries of a per-subset list; refuses what would make a wrong root list."""
    entries = []
    lines = path.read_text(encoding="utf-8").replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry:
            raise DataError(path, "blank line", line=number)
        if "/" in entry or "\\" in entry or entry.startswith(".."):
            raise DataError(path, f"entry {entry!r} is not a plain file name", line=number)
        entries.append(entry)
    return entries


def write_root_lists(root: Path, subsets: list[str] | None = None) -> dict[str, int]:
    """Write ``root/IHD_<split>.txt`` for both splits from ``subsets`` (default: :func:`default_subsets`).

    Returns {split: entry count}. Entries keep each list's order, subsets go in the given order.
    An existing root list with other entries (the official ones, say) is never replaced.
    """
    names = default_subsets(root) if subsets is None else subsets
    if not names:
        raise DataError(root, "no subset folders (with composite_images/) to list")
    texts = {}
    for split in layout.SPLITS:
        lines = []
        for name in names:
            subset = root / name
            if not layout.is_subset_dir(subset):
                raise DataError(subset, "not a subset folder (no composite_images/)")
            lines += [f"{name}/composite_images/{entry}" for entry in _list_entries(layout.find_list(subset, split))]
        texts[split] = "".join(f"{line}\n" for line in lines)
    for split, text in texts.items():  # every list checked before any is written
        path = layout.root_list_path(root, split)
        if path.exists() and path.read_text(encoding="utf-8").replace("\r\n", "\n") != text:
            raise DataError(path, "exists with other entries (iHarmony4 ships its own lists): move it away to "
                                  "write the lists of these subsets")
    for split, text in texts.items():
        atomic_write_text(layout.root_list_path(root, split), text)
    return {split: text.count("\n") for split, text in texts.items()}


def _resize_file(job: tuple[Path, Path, int]) -> str:
    """Resize (or copy) one file as the notebook did; returns 'copied' or 'resized'."""
    source, target, max_side = job
    data = source.read_bytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(source, "not a decodable image (corrupt or unsupported format)")
    if max(image.shape[:2]) <= max_side:
        shutil.copyfile(source, target)
        return "copied"
    resized = downscale_to_max_side(image, max_side)
    params = [cv2.IMWRITE_JPEG_QUALITY, RESIZED_JPEG_QUALITY] if source.suffix == ".jpg" else []
    write_encoded(target, encode_image(target, resized, params, rgb=False))
    return "resized"


def resize_subset(source: Path, target: Path, max_side: int = 1024, workers: int = 2,
                  progress: Callable[[Iterable, int], Iterable] | None = None) -> dict[str, int]:
    """Write the resized copy of the subset ``source`` to ``target`` (which must not exist).

    Returns {'copied': n, 'resized': m, 'lists': k}.
    """
    if not layout.is_subset_dir(source):
        raise DataError(source, "not a subset folder (no composite_images/)")
    if target.exists():
        raise DataError(target, "already exists; remove it first")
    target.mkdir(parents=True)
    for sub in layout.SUBFOLDERS:
        (target / sub).mkdir()
    lists = sorted(source.glob("*.txt"))
    for path in lists:
        shutil.copyfile(path, target / path.name)
    # The notebook's selection: every .jpg and .png below the subset, at any depth.
    files = sorted(source.rglob("*.jpg")) + sorted(source.rglob("*.png"))
    jobs = []
    for path in files:
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        jobs.append((path, destination, max_side))
    counts = {"copied": 0, "resized": 0, "lists": len(lists)}
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers))
            results: Iterable[str] = pool.imap_unordered(_resize_file, jobs, chunksize=4)
        else:
            results = map(_resize_file, jobs)
        for outcome in (progress(results, len(jobs)) if progress else results):
            counts[outcome] += 1
    return counts
