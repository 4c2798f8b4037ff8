"""Finding the mask of each composite in users' folders (predict_for_dir, harmony score).

For a composite ``<stem>.<ext>`` the first of these rules that matches wins:

1. ``<stem>.<any image ext>`` in the masks folder (only when it is another folder);
2. ``<stem>_mask.<any image ext>``;
3. ``<stem without its last _part>.png``, the official rule (``c1_2_3.jpg`` -> ``c1_2.png``).

``*_mask`` files are never taken for composites, and when masks share the
images' folder, a file that is another image's mask is not a composite either.
Nothing is ignored silently: files that are not images, and ``*_mask`` files
that no composite uses, come back as notes; an image-named symbolic link that
resolves to no file (dangling, or a loop) comes back as a failed composite.
"""
from __future__ import annotations

import os
from pathlib import Path

from iharm.data.errors import DataError
from iharm.data.io import IMAGE_EXTENSIONS


def _image_files(folder: Path) -> tuple[list[Path], list[str], list[Path]]:
    """Image files, notes on the other files, and image-named symbolic links that resolve to nothing."""
    images, notes, broken = [], [], []
    for path in sorted(folder.iterdir()):
        is_image = path.suffix.lower() in IMAGE_EXTENSIONS
        if path.is_symlink() and not path.exists():  # dangling, or a loop
            if is_image:
                broken.append(path)
            else:
                notes.append(f"{path}: skipped, a symbolic link that resolves to no file")
        elif not path.is_file():
            continue
        elif is_image:
            images.append(path)
        else:
            notes.append(f"{path}: skipped, not an image file (extension '{path.suffix}')")
    return images, notes, broken


def find_mask(image: Path, masks_dir: Path, same_dir: bool, masks_by_stem: dict[str, list[Path]]) -> Path:
    """The mask of ``image`` by the rules above; a DataError says what was looked for."""
    rules: list[tuple[str, str | None]] = ([] if same_dir else [(image.stem, None)]) + [(f"{image.stem}_mask", None)]
    if "_" in image.stem:
        rules.append((image.stem.rsplit("_", 1)[0], ".png"))
    for stem, suffix in rules:
        found = [p for p in masks_by_stem.get(stem, []) if suffix is None or p.suffix.lower() == suffix]
        if len(found) == 1:
            return found[0]
        if found:
            raise DataError(image, "several masks match: " + ", ".join(str(p) for p in found))
    wanted = " or ".join(f"{stem}{suffix or '.<ext>'}" for stem, suffix in rules)
    raise DataError(image, f"no mask found: looked for {wanted} in {masks_dir}")


def pair_masks(images_dir: Path, masks_dir: Path) -> tuple[list[tuple[Path, Path | DataError]], list[str]]:
    """``[(composite, its mask or the DataError saying why none)]`` (sorted) and notes on skipped files."""
    same_dir = images_dir.resolve() == masks_dir.resolve()
    images, notes, broken = _image_files(images_dir)
    mask_files = images if same_dir else _image_files(masks_dir)[0]
    masks_by_stem: dict[str, list[Path]] = {}
    for path in mask_files:
        masks_by_stem.setdefault(path.stem, []).append(path)
    candidates = [p for p in images if not p.stem.endswith("_mask")]
    found: dict[Path, Path | DataError] = {}
    for image in candidates:
        try:
            found[image] = find_mask(image, masks_dir, same_dir, masks_by_stem)
        except DataError as exc:
            found[image] = exc
    used_as_masks = {m.resolve() for m in found.values() if isinstance(m, Path)}
    if same_dir:
        candidates = [p for p in candidates if p.resolve() not in used_as_masks]
    notes += [f"{p}: skipped: named like a mask (*_mask) but no composite here uses it"
              for p in images if p.stem.endswith("_mask") and p.resolve() not in used_as_masks]
    for link in broken:  # a composite the user meant to give: it fails, it is not skipped
        found[link] = DataError(link, f"symbolic link to {os.readlink(link)} that resolves to no file "
                                      "(missing target or a loop)")
    return [(image, found[image]) for image in sorted([*candidates, *broken])], notes
