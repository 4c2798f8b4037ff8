"""iHarmony4-layout datasets: list files, samples, augmentation, tensors.

Layout (the iHarmony4 release, and every HSynth dataset)::

    <root>/composite_images/{real}_{m}_{k}.jpg
    <root>/masks/{real}_{m}.png
    <root>/real_images/{real}.jpg
    <root>/<Name>_train.txt, <Name>_test.txt      one composite file name per line

A root holding ``IHD_train.txt`` / ``IHD_test.txt`` (BargainNet's lists) is read
the same way; its lines are ``<Sub>/composite_images/<name>`` relative to the root.

A sample is read, augmented (one random draw for composite, real, mask and Lab)
and turned into tensors: ``images`` / ``target_images`` / ``images_lab`` stay
uint8 CHW (normalisation happens on the device, see ``iharm.data.normalization``),
``masks`` is float32 1xHxW in [0, 1] (soft, as the official loader).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from iharm.data.color import rgb_to_lab
from iharm.data.errors import DataError
from iharm.data.io import mask_problem, read_image, read_mask
from iharm.data.layout import find_list, mask_name, real_name
from iharm.data.transforms import HCompose

#: When the Lab image is computed: from the original-resolution RGB and then
#: resized with it ("original", the official pipeline), or not at all ("none",
#: for models without a Lab branch).
LabMode = Literal["original", "none"]

@dataclass(frozen=True)
class Entry:
    """One composite of a list file, with the real image and mask it implies."""

    composite: Path
    mask: Path
    real: Path
    list_file: Path
    line: int

    @property
    def name(self) -> str:
        return self.composite.name

    def error(self, path: Path, message: str) -> DataError:
        return DataError(path, f"{message} (listed at {self.list_file}:{self.line})")


def _derive(dataset_path: Path, list_file: Path, line_no: int, text: str) -> Entry:
    relative = PurePosixPath(text.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or ":" in relative.parts[0]:
        raise DataError(list_file, f"entry '{text}' points outside the dataset root", line_no)
    if len(relative.parts) == 1:
        folder = PurePosixPath()
    elif len(relative.parts) >= 2 and relative.parts[-2] == "composite_images":
        folder = PurePosixPath(*relative.parts[:-2])
    else:
        raise DataError(list_file, f"entry '{text}' is neither a file name nor '<Sub>/composite_images/<name>'",
                        line_no)
    stem, suffix = os.path.splitext(relative.name)
    if stem.count("_") < 2:
        raise DataError(list_file, f"entry '{text}': composite names must read '{{real}}_{{mask}}_{{k}}{suffix}'",
                        line_no)
    base = dataset_path / folder
    return Entry(composite=base / "composite_images" / relative.name, mask=base / "masks" / mask_name(relative.name),
                 real=base / "real_images" / real_name(relative.name), list_file=list_file, line=line_no)


def read_list(dataset_path: str | os.PathLike, split: str) -> list[Entry]:
    """Entries of the split's list file; blank lines and ``\\r\\n`` endings are tolerated,
    duplicates and entries that leave the dataset root are errors naming the line."""
    dataset_path = Path(dataset_path)
    if not dataset_path.is_dir():
        raise DataError(dataset_path, "dataset folder not found")
    list_file = find_list(dataset_path, split)
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(list_file, f"cannot be read as a UTF-8 text list ({exc})") from None
    entries: list[Entry] = []
    first_seen: dict[str, int] = {}
    for line_no, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        if text in first_seen:
            raise DataError(list_file, f"duplicate entry '{text}' (first at line {first_seen[text]})", line_no)
        first_seen[text] = line_no
        entries.append(_derive(dataset_path, list_file, line_no, text))
    if not entries:
        raise DataError(list_file, "lists no images (the file is empty or holds only blank lines)")
    return entries


def _missing_files(entry: Entry) -> list[Path]:
    return [p for p in (entry.composite, entry.real, entry.mask) if not p.is_file()]


def sample_seed(base_seed: int, epoch: int, index: int) -> int:
    """A per-sample seed that depends on nothing but (seed, epoch, index).

    Augmentation is therefore the same whichever worker loads the sample, and a
    resumed run draws exactly what the uninterrupted run drew.
    """
    return int(np.random.SeedSequence([base_seed, epoch, index]).generate_state(1)[0])


class BaseHDataset(Dataset):
    """Augmentation, Lab and tensor conversion shared by every harmonization dataset.

    ``keep_background_prob`` as in the official code: training re-draws the
    augmentation until the augmented mask has more than ``min_foreground_area``
    pixels, except that with this probability any draw is kept; a negative value
    keeps every draw (validation, evaluation). ``min_foreground_area`` is 10.0
    in DucoNet and 1.0 in iSSAM.

    Items are indexed by ``int`` or by ``(index, seed)`` pairs from
    :class:`iharm.data.sampler.SeededSampler`, which make augmentation
    reproducible. With ``skip_bad_samples`` a sample that raises
    :class:`DataError` comes back as ``{'skipped': message}``; :func:`collate_samples`
    drops it from the batch and lists it, so the trainer can count and report it.
    """

    def __init__(self, augmentator: HCompose | None = None, keep_background_prob: float = -1.0,
                 min_foreground_area: float = 10.0, lab: LabMode = "original",
                 skip_bad_samples: bool = False) -> None:
        if lab not in ("original", "none"):
            raise ValueError(f"lab must be 'original' or 'none', got {lab!r}")
        self.augmentator = augmentator
        self.keep_background_prob = keep_background_prob
        self.min_foreground_area = min_foreground_area
        self.lab = lab
        self.skip_bad_samples = skip_bad_samples

    def get_sample(self, index: int, seed: int | None = None) -> dict[str, Any]:
        """Raw sample: ``image``, ``target_image`` (uint8 RGB), ``mask`` (float32 HxW), ``name``.

        ``seed`` is the sample's seed (None without a seeded sampler): datasets
        that synthesise their samples draw from it; file datasets ignore it.
        """
        raise NotImplementedError

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        try:
            sample = self.get_sample(index, seed)
        except DataError as exc:
            if self.skip_bad_samples:
                return {"skipped": str(exc)}
            raise
        rng = np.random.default_rng(seed)
        if self.lab == "original":
            sample["image_lab"] = rgb_to_lab(sample["image"])
        return self.to_tensors(self.augment_sample(sample, rng), index)

    def augment_sample(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        if self.augmentator is None:
            return sample
        self.augmentator.set_random_seed(int(rng.integers(2**31)))
        while True:
            augmented = self.augmentator.apply_to_sample(sample)
            if self.keep_background_prob < 0.0 or rng.random() < self.keep_background_prob \
                    or augmented["mask"].sum() > self.min_foreground_area:
                return {**sample, **augmented}

    @staticmethod
    def to_tensors(sample: dict[str, Any], index: int) -> dict[str, Any]:
        def chw(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

        out = {
            "images": chw(sample["image"]),
            "target_images": chw(sample["target_image"]),
            "masks": torch.from_numpy(np.ascontiguousarray(sample["mask"], dtype=np.float32))[None],
            "index": index,
            "name": sample["name"],
        }
        if "image_lab" in sample:
            out["images_lab"] = chw(sample["image_lab"])
        return out


class HDataset(BaseHDataset):
    """One iHarmony4-layout folder and split (``HDataset(path, 'train')``).

    The list is read and every listed file is checked to exist when the dataset
    is built, so a broken dataset fails before training starts, with every
    missing file counted and the first ones named. With ``skip_bad_samples``
    entries with missing files are dropped instead and kept in ``self.problems``.
    """

    def __init__(self, dataset_path: str | os.PathLike, split: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dataset_path = Path(dataset_path)
        self.split = split
        entries = read_list(self.dataset_path, split)
        self.problems: list[str] = []
        missing = [(entry, path) for entry in entries for path in _missing_files(entry)]
        if missing:
            messages = [str(entry.error(path, "file not found")) for entry, path in missing]
            if not self.skip_bad_samples:
                shown = "\n  ".join(messages[:10])
                more = f"\n  ... and {len(messages) - 10} more" if len(messages) > 10 else ""
                raise DataError(self.dataset_path, f"{len(messages)} listed files are missing:\n  {shown}{more}")
            self.problems.extend(messages)
            bad = {id(entry) for entry, _ in missing}
            entries = [entry for entry in entries if id(entry) not in bad]
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    def get_sample(self, index: int, seed: int | None = None) -> dict[str, Any]:
        entry = self.entries[index]
        try:
            image = read_image(entry.composite)
            target = read_image(entry.real)
            mask = read_mask(entry.mask)
        except DataError as exc:
            raise entry.error(exc.path, exc.message) from None
        if image.shape != target.shape:
            raise entry.error(entry.composite, f"size {image.shape[1]}x{image.shape[0]} differs from the real "
                                               f"image {entry.real} ({target.shape[1]}x{target.shape[0]})")
        if mask.shape != image.shape[:2]:
            raise entry.error(entry.mask, f"mask size {mask.shape[1]}x{mask.shape[0]} differs from the "
                                          f"composite {entry.composite} ({image.shape[1]}x{image.shape[0]})")
        problem = mask_problem(mask > 0.5)
        if problem is not None:
            raise entry.error(entry.mask, f"{problem} (pixels above 0.5 are foreground)")
        return {"image": image, "target_image": target, "mask": mask, "name": entry.name}


class ComposeDataset(BaseHDataset):
    """Several datasets as one (the official training set is four iHarmony4 subsets).

    Samples come from the sub-datasets' ``get_sample``; augmentation, Lab mode
    and ``keep_background_prob`` are this dataset's, as in the official code.
    """

    def __init__(self, datasets: Sequence[BaseHDataset], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.datasets = list(datasets)
        self._index = [(d, i) for d, dataset in enumerate(self.datasets) for i in range(len(dataset))]
        self.problems = [p for dataset in self.datasets for p in getattr(dataset, "problems", [])]

    def __len__(self) -> int:
        return len(self._index)

    def get_sample(self, index: int, seed: int | None = None) -> dict[str, Any]:
        dataset, sub_index = self._index[index]
        return self.datasets[dataset].get_sample(sub_index, seed)


def collate_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``default_collate`` that drops skipped samples and lists them under ``'skipped'``."""
    skipped = [s["skipped"] for s in samples if "skipped" in s]
    good = [s for s in samples if "skipped" not in s]
    batch: dict[str, Any] = default_collate(good) if good else {}
    batch["skipped"] = skipped
    return batch
