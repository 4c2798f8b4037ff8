"""Tiny iHarmony4-layout datasets written from real photos, for tests.

Composites are made the iHarmony4 way: the real photo with only the foreground
changed (here a fixed colour gain), so tests know exactly where composite and
real must agree.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photo(name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """A scikit-image sample photo as uint8 RGB, optionally resized to (width, height)."""
    image = getattr(skdata, name)()
    if size is not None:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def ellipse_mask(height: int, width: int, center: tuple[float, float] = (0.5, 0.5),
                 axes: tuple[float, float] = (0.25, 0.2)) -> np.ndarray:
    """A uint8 {0, 255} ellipse mask; center and axes as fractions of (width, height)."""
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (int(center[0] * width), int(center[1] * height)),
                (max(1, int(axes[0] * width)), max(1, int(axes[1] * height))), 0, 0, 360, 255, -1)
    return mask


def recolor(real: np.ndarray, mask: np.ndarray, gain: tuple[float, float, float] = (1.2, 0.85, 0.9)) -> np.ndarray:
    """The real image with the foreground's channels scaled (the composite)."""
    changed = np.clip(real.astype(np.float32) * np.array(gain, np.float32), 0, 255).round().astype(np.uint8)
    return np.where(mask[..., None] > 127, changed, real)


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write losslessly (PNG content, whatever the name says: decoders go by content),
    so that tests can rely on composite == real outside the mask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok, path
    path.write_bytes(buffer.tobytes())


def make_dataset(root: Path, name: str = "Tiny", size: tuple[int, int] = (96, 72),
                 splits: dict[str, int] | None = None, photos: tuple[str, ...] = PHOTOS) -> Path:
    """Write ``root/name`` with ``{split: count}`` composites spread over ``photos``.

    Images are stored losslessly under iHarmony4's ``.jpg`` names; the composite of real ``p{i}`` with mask ``m`` is ``p{i}_{m}_1.jpg``.
    """
    splits = splits or {"train": 4, "test": 2}
    folder = root / name
    counter = 0
    for split, count in splits.items():
        names = []
        for _ in range(count):
            photo_name = photos[counter % len(photos)]
            real = photo(photo_name, size)
            mask = ellipse_mask(size[1], size[0], center=(0.35 + 0.1 * (counter % 4), 0.5))
            real_id = f"p{counter}"
            write_rgb(folder / "real_images" / f"{real_id}.jpg", real)
            (folder / "masks").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / "masks" / f"{real_id}_1.png"), mask)
            write_rgb(folder / "composite_images" / f"{real_id}_1_1.jpg", recolor(real, mask))
            names.append(f"{real_id}_1_1.jpg")
            counter += 1
        (folder / f"{name}_{split}.txt").write_text("".join(n + "\n" for n in names))
    return folder
