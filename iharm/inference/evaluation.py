"""Evaluation on iHarmony4-layout test sets: the numbers behind the paper tables.

The official protocol (DucoNet / iSSAM ``scripts/evaluate_model.py``) is kept:

* every test image is resized with the chosen strategy (composite, real image,
  mask and, for DucoNet, the Lab image computed at the original resolution,
  all together and bilinearly), predicted, and compared at that resolution with
  the resized real image; the prediction is clamped to [0, 255], not rounded;
* the metrics are those of :mod:`iharm.utils.metrics` (iSSAM definitions by
  default, other variants by name), per image, averaged per dataset; the
  "Overall" row pools the images of all datasets (weights by image count);
* the raw network output is evaluated, never composited with the mask (also
  BargainNet's, as its official test did); ``composite_output`` evaluates
  ``out * mask + composite * (1 - mask)`` instead, and every table says which.

What differs: any device (the official code called ``torch.cuda.synchronize``
unconditionally), flip TTA that works for DucoNet (see the Predictor), and
throughput: DataLoader workers read and resize, equal-size images are
predicted as one batch (all of them with the Fixed* strategies; with ``None``
or ``LimitLongest1024`` the images of a loaded batch are grouped by size, and
no forward gets more than ``max_batch_pixels`` pixels, so a batch of 12 MP
photos does not run out of memory).

``AvgTime`` is milliseconds per image spent in ``Predictor.predict_batch``
(copy to the device, padding, normalisation, forward, de-normalisation,
clamp), the device synchronised before and after, divided by the images in
that forward. Reading, decoding and resizing (in the workers) and the metrics
are not included; the wall-clock images/s of the whole loop is reported
beside it. The official AvgPredictTime was the same span for one image at a
time.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from iharm.data.hdataset import HDataset
from iharm.data.io import write_image
from iharm.data.transforms import RESIZE_STRATEGIES, HCompose, resize_transform
from iharm.inference.predictor import Predictor
from iharm.inference.utils import load_model
from iharm.model.registry import get_model_spec
from iharm.utils.files import atomic_write_text
from iharm.utils.metrics import (METRIC_NAMES, MetricsAccumulator, MetricVariant, foreground_ratio,
                                 format_table, image_metrics, overall)

#: The pseudo-model whose prediction is the input composite: the "composite" row of every table.
COMPOSITE = "Composite"
#: The official ``evaluate_model.py`` default datasets (HAdobe5k at full resolution).
DEFAULT_DATASETS = ("HFlickr", "HDay2Night", "HCOCO", "HAdobe5k1")
#: Columns of the per-image CSV.
PER_IMAGE_COLUMNS = ("name", "dataset", *METRIC_NAMES, "fg_ratio", "height", "width", "predict_ms")
#: Largest number of pixels (images x H x W) in one forward: 8 images at 1024 x 1024.
DEFAULT_MAX_BATCH_PIXELS = 8 * 1024 * 1024
AVG_TIME_DEFINITION = ("ms per image in Predictor.predict_batch (device copy, padding, normalisation, forward, "
                       "de-normalisation, clamp; device synchronised), excluding data loading and metrics")


class CompositePredictor:
    """The identity "model": the prediction is the composite itself, as float on 0..255.

    Evaluating it gives the input-composite row of the paper tables from the
    same data path and metrics as the models.
    """

    spec = None
    with_flip = False

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    def predict_batch(self, images: torch.Tensor, masks: torch.Tensor,
                      images_lab: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 N3HW composites -> the same as float32 N3HW on the device."""
        return images.to(self.device).float()


AnyPredictor = Predictor | CompositePredictor


#: ``--precision`` of the command-line tools -> :class:`~iharm.inference.predictor.Predictor` ``precision``.
PRECISION_CHOICES = {"fp32": "float32", "bf16": "bf16", "fp16": "fp16"}


def build_predictor(model_type: str, checkpoint: str | os.PathLike | None, device: str | torch.device,
                    with_flip: bool = False, precision: str = "float32") -> AnyPredictor:
    """A Predictor for a registered model loaded strictly from ``checkpoint``, or the Composite identity.

    ``precision``: a :data:`~iharm.inference.predictor.PRECISIONS` name, or a ``--precision`` choice."""
    if model_type == COMPOSITE:
        if checkpoint is not None:
            raise ValueError(f"{COMPOSITE} is the unharmonized input and takes no checkpoint (got {checkpoint})")
        return CompositePredictor(device)
    if checkpoint is None:
        raise ValueError(f"{model_type} needs a checkpoint")
    spec = get_model_spec(model_type)
    return Predictor(load_model(model_type, checkpoint, device), spec, device, with_flip=with_flip,
                     precision=PRECISION_CHOICES.get(precision, precision))


def needs_lab(predictor: AnyPredictor) -> bool:
    return predictor.spec is not None and predictor.spec.needs_lab


@dataclass(frozen=True)
class EvaluationSettings:
    """How test images are resized, batched, predicted and scored."""

    resize_strategy: str = "Fixed256"
    batch_size: int = 8
    workers: int = 2
    variant: MetricVariant = field(default_factory=MetricVariant)
    composite_output: bool = False
    max_batch_pixels: int = DEFAULT_MAX_BATCH_PIXELS
    save_images: Path | None = None

    def __post_init__(self) -> None:
        if self.resize_strategy not in RESIZE_STRATEGIES:
            raise ValueError(f"unknown resize strategy '{self.resize_strategy}' "
                             f"(choose from {', '.join(RESIZE_STRATEGIES)})")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 or more, got {self.workers}")

    def output_description(self) -> str:
        if self.composite_output:
            return "composited output (out * mask + composite * (1 - mask))"
        return "raw network output (not composited, as the official evaluation)"


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


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def equal_size_groups(samples: Sequence[dict[str, Any]], max_pixels: int) -> Iterator[list[dict[str, Any]]]:
    """Samples grouped by image size (first-seen order), each group cut to at most ``max_pixels`` pixels
    (never less than one image), so that every group is one forward."""
    by_size: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for sample in samples:
        by_size.setdefault(tuple(sample["images"].shape[-2:]), []).append(sample)
    for (height, width), group in by_size.items():
        step = max(1, max_pixels // (height * width))
        for start in range(0, len(group), step):
            yield group[start:start + step]


def _evaluate_group(predictor: AnyPredictor, group: list[dict[str, Any]], dataset: str,
                    settings: EvaluationSettings) -> list[ImageResult]:
    device = predictor.device
    images = torch.stack([s["images"] for s in group])
    masks = torch.stack([s["masks"] for s in group])
    labs = torch.stack([s["images_lab"] for s in group]) if "images_lab" in group[0] else None
    _synchronize(device)
    start = time.perf_counter()
    prediction = predictor.predict_batch(images, masks, labs)
    _synchronize(device)
    seconds = (time.perf_counter() - start) / len(group)
    masks_on_device = masks.to(device)
    if settings.composite_output:
        prediction = prediction * masks_on_device + images.to(device).float() * (1 - masks_on_device)
    targets = torch.stack([s["target_images"] for s in group]).to(device).float()
    metrics = {k: v.cpu().tolist() for k, v in image_metrics(prediction, targets, masks_on_device,
                                                             settings.variant).items()}
    ratios = foreground_ratio(masks).tolist()
    if settings.save_images is not None:
        as_uint8 = prediction.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for sample, image in zip(group, as_uint8):
            write_image(settings.save_images / dataset / f"{Path(sample['name']).stem}.png", image)
    height, width = images.shape[-2:]
    return [ImageResult(name=s["name"], dataset=dataset, metrics={k: metrics[k][i] for k in METRIC_NAMES},
                        fg_ratio=ratios[i], height=int(height), width=int(width), predict_seconds=seconds)
            for i, s in enumerate(group)]


def evaluate_dataset(predictor: AnyPredictor, dataset_path: str | os.PathLike, name: str,
                     settings: EvaluationSettings, progress: bool = True) -> DatasetResult:
    """Predict and score the test split of one iHarmony4-layout folder.

    A missing or unreadable test file is an error naming it (raised before any
    prediction for missing files): a table over a silently shortened test set
    would not be comparable.
    """
    dataset = HDataset(dataset_path, "test", augmentator=HCompose([resize_transform(settings.resize_strategy)]),
                       keep_background_prob=-1.0, lab="original" if needs_lab(predictor) else "none")
    loader = DataLoader(dataset, batch_size=settings.batch_size, num_workers=settings.workers, collate_fn=list,
                        pin_memory=predictor.device.type == "cuda")
    results: list[ImageResult] = []
    start = time.perf_counter()
    for samples in tqdm(loader, desc=name, leave=False, disable=None if progress else True):
        for group in equal_size_groups(samples, settings.max_batch_pixels):
            results.extend(_evaluate_group(predictor, group, name, settings))
    return DatasetResult(name=name, path=Path(dataset_path), images=results, wall_seconds=time.perf_counter() - start)


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


# --- command line (shared by evaluate_model.py and evaluate_model_fg_ratios.py) ----------------------------

