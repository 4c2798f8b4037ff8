"""A contact sheet of an HSynth build: composite | mask | real, one row per sample,
samples of as many different transform families as asked for."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from iharm.data.io import jpeg_within, read_image, read_mask, write_encoded

_TILE = 200
_LABEL_HEIGHT = 18


def pick_samples(rows: list[dict[str, str]], count: int, seed: int = 0) -> list[dict[str, str]]:
    """Up to ``count`` meta rows, one per family in turn (families cycle if fewer), seeded.

    Samples come from the upper half of their family's fMSE, so that the change
    can be seen at thumbnail size; the sheet labels each with its fMSE.
    """
    rng = np.random.default_rng(seed)
    by_family: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_family.setdefault(row["family"], []).append(row)
    for family, members in by_family.items():
        median = float(np.median([float(row["fmse"]) for row in members]))
        by_family[family] = [row for row in members if float(row["fmse"]) >= median]
    picked: list[dict[str, str]] = []
    available = sum(len(members) for members in by_family.values())
    while len(picked) < min(count, available):
        for family in sorted(by_family):
            pool = [row for row in by_family[family] if row not in picked]
            if pool and len(picked) < count:
                picked.append(pool[int(rng.integers(len(pool)))])
    return picked


def _tile(image: np.ndarray, label: str) -> np.ndarray:
    height, width = image.shape[:2]
    scale = _TILE / max(height, width)
    small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    canvas = np.full((_TILE + _LABEL_HEIGHT, _TILE, 3), 255, np.uint8)
    y0, x0 = _LABEL_HEIGHT + (_TILE - small.shape[0]) // 2, (_TILE - small.shape[1]) // 2
    canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    cv2.putText(canvas, label, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def contact_sheet(dataset_dir: Path, rows: list[dict[str, str]], path: Path, count: int = 8,
                  max_bytes: int = 400_000) -> Path:
    """Write a JPEG contact sheet of ``count`` samples to ``path``, below ``max_bytes``.

    Two samples go side by side per line (composite | mask | real twice); the
    JPEG quality drops from 90 until the file fits.
    """
    tiles = []
    for row in pick_samples(rows, count):
        composite = read_image(dataset_dir / "composite_images" / row["composite"])
        mask = (read_mask(dataset_dir / "masks" / row["mask"]) * 255).astype(np.uint8)
        real = read_image(dataset_dir / "real_images" / row["real"])
        tiles.append(np.hstack([
            _tile(composite, f"{row['family']} fMSE {float(row['fmse']):.0f}"),
            _tile(np.dstack([mask] * 3), f"{row['mask_kind']} {float(row['fg_ratio']):.0%}"),
            _tile(real, "real"),
        ]))
    if len(tiles) % 2:
        tiles.append(np.full_like(tiles[0], 255))
    gap = np.full((tiles[0].shape[0], 12, 3), 255, np.uint8)
    sheet = np.vstack([np.hstack([tiles[i], gap, tiles[i + 1]]) for i in range(0, len(tiles), 2)])
    data = jpeg_within(sheet, max_bytes, range(90, 30, -5))
    if data is not None:
        write_encoded(path, data)
        return path
    raise RuntimeError(f"contact sheet does not fit in {max_bytes} bytes even at quality 35")
