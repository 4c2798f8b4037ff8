"""Aggregation, tables and figures of the quality benchmark (``scripts/benchmark_quality.py``).

The benchmark scores models with ``scripts/evaluate_model.py``, which writes
one CSV row per test image (:data:`~iharm.inference.evaluation.PER_IMAGE_COLUMNS`).
This module reads those rows back and pools them into groups (transform
family, foreground-ratio bucket, held-out family) with the evaluation's own
:func:`~iharm.inference.report.accumulate`, so a group's value is the mean
of its images' values, exactly as a dataset row of the evaluation table; it
also renders Markdown tables, result grids (one row per test image, one
column per model) and the fMSE-against-time plot, as small JPEGs.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from iharm.data.io import jpeg_within, write_encoded
from iharm.inference.report import ImageResult, accumulate
from iharm.utils.metrics import METRIC_NAMES

#: Largest size of a figure written for the documentation.
MAX_FIGURE_BYTES = 300_000
#: Format of each column of the Markdown tables.
COLUMN_FORMATS: Mapping[str, str] = {"N": "{:.0f}", "MSE": "{:.1f}", "fMSE": "{:.1f}", "PSNR": "{:.2f}",
                                     "fPSNR": "{:.2f}", "SSIM": "{:.4f}", "fMSE / Composite": "{:.3f}"}


def read_per_image_csv(path: Path) -> list[ImageResult]:
    """The per-image rows written by ``evaluate_model.py --results-path`` (``per_image.csv``)."""
    with open(path, newline="") as handle:
        return [ImageResult(name=row["name"], dataset=row["dataset"],
                            metrics={name: float(row[name]) for name in METRIC_NAMES},
                            fg_ratio=float(row["fg_ratio"]), height=int(row["height"]), width=int(row["width"]),
                            predict_seconds=float(row["predict_ms"]) / 1000.0)
                for row in csv.DictReader(handle)]


def grouped_summaries(results: Iterable[ImageResult], group_of: Callable[[ImageResult], str | None],
                      order: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """``{group: summary}`` (N and the mean of every metric) of the images ``group_of`` assigns to a group.

    Images mapped to None belong to no group. Groups come in ``order`` when
    given (an empty group there gets N = 0 and NaN means), else sorted.
    """
    groups: dict[str, list[ImageResult]] = {}
    for result in results:
        group = group_of(result)
        if group is not None:
            groups.setdefault(group, []).append(result)
    names = list(order) if order is not None else sorted(groups)
    return {name: _summary(groups.get(name, [])) for name in names}


def _summary(results: list[ImageResult]) -> dict[str, float]:
    summary = accumulate(results).summary()
    return {"N": summary["N"], **{name: summary.get(name, math.nan) for name in METRIC_NAMES}}


def with_ratio(summary: Mapping[str, float], composite: Mapping[str, float]) -> dict[str, float]:
    """``summary`` plus ``fMSE / Composite``: its fMSE over the Composite row's fMSE on the same images."""
    ratio = summary["fMSE"] / composite["fMSE"] if composite.get("fMSE") else math.nan
    return {**summary, "fMSE / Composite": ratio}


def format_cell(column: str, value: float | str | None) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return COLUMN_FORMATS.get(column, "{:.3g}").format(value)


def markdown_table(rows: Mapping[str, Mapping[str, float | str | None]], columns: Sequence[str],
                   first_column: str = "") -> str:
    """A Markdown table: one line per entry of ``rows`` (its key first), the ``columns`` after."""
    lines = [f"| {first_column} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(format_cell(c, row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


# --- figures ---------------------------------------------------------------------------------------------------

def fit_box(image: np.ndarray, box: int, aspect: float | None = None) -> np.ndarray:
    """``image`` (HxW or HxWx3 uint8) resized to the aspect ratio ``aspect`` (width / height; default its
    own) and the largest size that fits a ``box`` x ``box`` square, centred on white; a mask becomes grey RGB."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    aspect = image.shape[1] / image.shape[0] if aspect is None else aspect
    width, height = (box, max(1, round(box / aspect))) if aspect >= 1 else (max(1, round(box * aspect)), box)
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    canvas = np.full((box, box, 3), 255, np.uint8)
    top, left = (box - height) // 2, (box - width) // 2
    canvas[top:top + height, left:left + width] = resized
    return canvas


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """A float mask in [0, 1] as a uint8 image (0..255)."""
    return np.round(np.clip(mask, 0.0, 1.0) * 255).astype(np.uint8)


def result_grid(rows: Sequence[Sequence[np.ndarray]], column_names: Sequence[str], tile: int = 160,
                aspects: Sequence[float] | None = None, gap: int = 2) -> np.ndarray:
    """One row per example, one ``tile`` x ``tile`` cell per column, column names on top.

    Every image of row ``i`` is shown at the aspect ratio ``aspects[i]`` (default:
    its first image's), as large as fits its cell, on white.
    """
    if any(len(row) != len(column_names) for row in rows):
        raise ValueError(f"every row needs {len(column_names)} tiles ({', '.join(column_names)})")
    cell = tile + gap
    header = np.full((22, cell * len(column_names), 3), 255, np.uint8)
    for index, name in enumerate(column_names):
        cv2.putText(header, name, (index * cell + 4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    lines = [header]
    for index, row in enumerate(rows):
        aspect = aspects[index] if aspects is not None else row[0].shape[1] / row[0].shape[0]
        tiles = [np.pad(fit_box(image, tile, aspect), ((0, gap), (0, gap), (0, 0)), constant_values=255)
                 for image in row]
        lines.append(np.concatenate(tiles, axis=1))
    return np.concatenate(lines, axis=0)


def line_plot(series: Mapping[str, Sequence[tuple[float, float]]], x_label: str, y_label: str,
              reference: tuple[str, float] | None = None, size: tuple[int, int] = (640, 360)) -> np.ndarray:
    """A small RGB line plot of ``{name: [(x, y), ...]}`` (points and lines, a legend) with an optional
    horizontal reference line ``(label, y)``; axes start at 0."""
    width, height = size
    left, right, top, bottom = 60, 150, 15, 40
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    canvas = np.full((height, width, 3), 255, np.uint8)
    points = [p for values in series.values() for p in values]
    x_max = max([p[0] for p in points] + [1.0])
    y_max = 1.1 * max([p[1] for p in points] + ([reference[1]] if reference else []) + [1e-9])

    def to_pixel(x: float, y: float) -> tuple[int, int]:
        return (int(left + (width - left - right) * x / x_max), int(height - bottom - (height - top - bottom) * y / y_max))

    black, grey = (0, 0, 0), (200, 200, 200)
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        y_value = fraction * y_max
        _, y = to_pixel(0, y_value)
        cv2.line(canvas, (left, y), (width - right, y), grey if fraction else black, 1)
        cv2.putText(canvas, f"{y_value:.0f}", (5, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, black, 1, cv2.LINE_AA)
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        x, _ = to_pixel(fraction * x_max, 0)
        cv2.putText(canvas, f"{fraction * x_max:.0f}", (x - 8, height - bottom + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    black, 1, cv2.LINE_AA)
    cv2.line(canvas, to_pixel(0, 0), (left, top), black, 1)
    cv2.putText(canvas, x_label, (left + 150, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, black, 1, cv2.LINE_AA)
    cv2.putText(canvas, y_label, (5, top + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, black, 1, cv2.LINE_AA)
    legend_y = top + 20
    if reference is not None:
        _, y = to_pixel(0, reference[1])
        for x in range(left, width - right, 8):
            cv2.line(canvas, (x, y), (min(x + 4, width - right), y), black, 1)
        cv2.putText(canvas, reference[0], (width - right + 8, legend_y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, black, 1,
                    cv2.LINE_AA)
        legend_y += 20
    for (name, values), colour in zip(series.items(), colours):
        pixels = [to_pixel(x, y) for x, y in sorted(values)]
        for a, b in zip(pixels, pixels[1:]):
            cv2.line(canvas, a, b, colour, 2, cv2.LINE_AA)
        for p in pixels:
            cv2.circle(canvas, p, 3, colour, -1, cv2.LINE_AA)
        cv2.putText(canvas, name, (width - right + 8, legend_y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1,
                    cv2.LINE_AA)
        legend_y += 20
    return canvas


def write_small_jpeg(path: Path, rgb: np.ndarray, max_bytes: int = MAX_FIGURE_BYTES) -> int:
    """Write ``rgb`` as the best-quality JPEG (95 down to 40) that stays under ``max_bytes``; returns the size.

    Raises ValueError when even quality 40 is too big (make the figure smaller).
    """
    data = jpeg_within(rgb, max_bytes)
    if data is not None:
        write_encoded(path, data)
        return len(data)
    raise ValueError(f"{path.name}: a {rgb.shape[1]}x{rgb.shape[0]} figure does not fit in {max_bytes} bytes")
