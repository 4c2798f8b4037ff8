"""The evaluation report: per-image results, their per-dataset and overall summaries, the
printed table, ``summary.json`` and ``per_image.csv`` (what every evaluation command writes)."""
from __future__ import annotations

import csv
import io
import json
import math
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from iharm.utils.files import atomic_write_text
from iharm.utils.metrics import METRIC_NAMES, MetricsAccumulator, format_table, overall

if TYPE_CHECKING:  # the settings are the evaluation loop's; the report only reads them
    from iharm.inference.evaluation import EvaluationSettings

#: Columns of the per-image CSV.
PER_IMAGE_COLUMNS = ("name", "dataset", *METRIC_NAMES, "fg_ratio", "height", "width", "predict_ms")
AVG_TIME_DEFINITION = ("ms per image in Predictor.predict_batch (device copy, padding, normalisation, forward, "
                       "de-normalisation, clamp; device synchronised), excluding data loading and metrics")


@dataclass(frozen=True)
class ImageResult:
    """One test image: its metrics at the evaluated resolution and its share of the predict time."""

    name: str
    dataset: str
    metrics: dict[str, float]
    fg_ratio: float
    height: int
    width: int
    predict_seconds: float

    def row(self) -> dict[str, Any]:
        return {"name": self.name, "dataset": self.dataset, **{k: repr(self.metrics[k]) for k in METRIC_NAMES},
                "fg_ratio": repr(self.fg_ratio), "height": self.height, "width": self.width,
                "predict_ms": f"{1000 * self.predict_seconds:.3f}"}


def accumulate(images: Iterable[ImageResult]) -> MetricsAccumulator:
    """A MetricsAccumulator over per-image results (a dataset, a fg-ratio bucket...)."""
    images = list(images)
    accumulator = MetricsAccumulator()
    if images:
        accumulator.update({name: torch.tensor([r.metrics[name] for r in images], dtype=torch.float64)
                            for name in METRIC_NAMES}, seconds=sum(r.predict_seconds for r in images))
    return accumulator


@dataclass
class DatasetResult:
    """Every image of one dataset, and the wall-clock time of its whole loop."""

    name: str
    path: Path
    images: list[ImageResult]
    wall_seconds: float

    @property
    def images_per_second(self) -> float:
        return len(self.images) / self.wall_seconds if self.wall_seconds > 0 else math.nan


@dataclass
class EvaluationReport:
    """An evaluation run: what was evaluated how, and the per-image results of every dataset."""

    model: str
    checkpoint: str | None
    device: str
    flip: bool
    settings: EvaluationSettings
    datasets: list[DatasetResult]
    started: str
    precision: str = "fp32"

    def header(self) -> str:
        source = f" ({self.checkpoint})" if self.checkpoint else ""
        return (f"{self.model}{source}, resize {self.settings.resize_strategy}, flip {'on' if self.flip else 'off'}, "
                f"device {self.device}, precision {self.precision}\noutput: {self.settings.output_description()}")

    def summaries(self) -> dict[str, dict[str, float]]:
        """``{dataset: summary}`` plus ``Overall`` (image-weighted) when there is more than one dataset."""
        accumulators = {d.name: accumulate(d.images) for d in self.datasets}
        rows = {name: acc.summary() for name, acc in accumulators.items()}
        if len(accumulators) > 1:
            rows["Overall"] = overall(accumulators.values()).summary()
        return rows

    def table(self) -> str:
        return f"{self.header()}\n{format_table(self.summaries(), variant=self.settings.variant)}"

    def to_json(self) -> dict[str, Any]:
        summaries = self.summaries()
        total_images = sum(len(d.images) for d in self.datasets)
        total_wall = sum(d.wall_seconds for d in self.datasets)
        return _json_safe({
            "model": self.model,
            "checkpoint": self.checkpoint,
            "resize_strategy": self.settings.resize_strategy,
            "flip": self.flip,
            "device": self.device,
            "precision": self.precision,
            "metric_variant": {"psnr_peak": self.settings.variant.psnr_peak,
                               "fmse_mask": self.settings.variant.fmse_mask},
            "output": "composited" if self.settings.composite_output else "raw",
            "output_description": self.settings.output_description(),
            "batch_size": self.settings.batch_size,
            "workers": self.settings.workers,
            "avg_time_definition": AVG_TIME_DEFINITION,
            "started": self.started,
            "datasets": {d.name: {"path": str(d.path), **summaries[d.name], "wall_seconds": d.wall_seconds,
                                  "images_per_second": d.images_per_second} for d in self.datasets},
            "overall": summaries.get("Overall", summaries[self.datasets[0].name] if self.datasets else {}),
            "wall_seconds": total_wall,
            "images_per_second": total_images / total_wall if total_wall > 0 else None,
            "torch": torch.__version__,
            "host": platform.node(),
        })

    def write(self, results_path: Path, prefix: str = "") -> tuple[Path, Path]:
        """``<prefix>per_image.csv`` and ``<prefix>summary.json`` in ``results_path``."""
        csv_path, json_path = results_path / f"{prefix}per_image.csv", results_path / f"{prefix}summary.json"
        write_per_image_csv(csv_path, (image for d in self.datasets for image in d.images))
        atomic_write_text(json_path, json.dumps(self.to_json(), indent=2) + "\n")
        return csv_path, json_path


def _json_safe(value: Any) -> Any:
    """NaN / inf -> None, so the file is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def write_per_image_csv(path: Path, images: Iterable[ImageResult]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=PER_IMAGE_COLUMNS)
    writer.writeheader()
    writer.writerows(image.row() for image in images)
    atomic_write_text(path, text.getvalue())


