"""The iHarmony4 folder layout and file naming, in one place.

A subset folder ``<root>/<Name>/`` holds ``composite_images/``, ``masks/`` and
``real_images/`` plus ``<Name>_train.txt`` / ``<Name>_test.txt`` listing
composite file names. A composite ``{real}_{m}_{k}.jpg`` belongs to the real
image ``real_images/{real}.jpg`` (the name up to the first ``_``) and the mask
``masks/{real}_{m}.png`` (the name up to the last ``_``), exactly as
saic-vul/image_harmonization's ``HDataset.get_sample`` derives them. The root
may carry ``IHD_train.txt`` / ``IHD_test.txt`` listing ``<Name>/composite_images/<file>``
(BargainNet's lists).

A subset's list for a split is found as iSSAM's ``HDataset`` finds it: the one
``*.txt`` whose stem ends with the split name. ``<Name>_<split>.txt`` is the
convention, but the official ``HAdobe5k_resized1024`` keeps HAdobe5k's list
names (its resize notebook copied them), so the rule is looser than the name.
"""
from __future__ import annotations

import re
from pathlib import Path

from iharm.data.errors import DataError

SUBFOLDERS = ("composite_images", "masks", "real_images")
SPLITS = ("train", "test")
ROOT_LIST_PREFIX = "IHD"


def real_name(composite: str) -> str:
    """File name of the real image a composite belongs to: ``a_1_2.jpg`` -> ``a.jpg``."""
    return composite.split("_")[0] + ".jpg"


def mask_name(composite: str) -> str:
    """File name of a composite's mask: ``a_1_2.jpg`` -> ``a_1.png``."""
    return "_".join(composite.split("_")[:-1]) + ".png"


def composite_name(real_stem: str, mask_index: int, index: int) -> str:
    """``{real}_{m}_{k}.jpg``; ``real_stem`` must not contain '_' (names are split on it)."""
    if "_" in real_stem or not real_stem:
        raise ValueError(f"real image stem {real_stem!r} must be non-empty and contain no '_'")
    return f"{real_stem}_{mask_index}_{index}.jpg"


def list_path(subset_dir: Path, split: str) -> Path:
    """``<subset>/<Name>_<split>.txt``: where a new list of a subset folder is written."""
    return subset_dir / f"{subset_dir.name}_{split}.txt"


def split_lists(subset_dir: Path, split: str) -> list[Path]:
    """All ``*.txt`` of a subset whose stem ends with ``split``: the loader needs exactly one."""
    return sorted(p for p in subset_dir.glob("*.txt") if p.stem.endswith(split))


def find_list(subset_dir: Path, split: str) -> Path:
    """The list of ``split`` in a subset folder; DataError unless there is exactly one."""
    candidates = split_lists(subset_dir, split)
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise DataError(subset_dir, f"needs exactly one *{split}.txt list (found: {found})")
    return candidates[0]


_RESIZED_COPY = re.compile(r"_resized\d+$")


def is_resized_copy(subset_name: str) -> bool:
    """True for ``<Sub>_resized<N>`` folders: a resized copy lists the same composites as its source."""
    return bool(_RESIZED_COPY.search(subset_name))


def root_list_path(root: Path, split: str) -> Path:
    """``<root>/IHD_<split>.txt``: all subsets' composites, paths relative to the root."""
    return root / f"{ROOT_LIST_PREFIX}_{split}.txt"


def is_subset_dir(path: Path) -> bool:
    """True for a folder that holds a ``composite_images`` folder."""
    return (path / "composite_images").is_dir()
