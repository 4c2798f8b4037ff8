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

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from iharm.data.hdataset import HDataset
from iharm.data.io import write_image
from iharm.data.transforms import RESIZE_STRATEGIES, HCompose, resize_transform
from iharm.inference.predictor import AnyPredictor, needs_lab
from iharm.inference.report import DatasetResult, ImageResult
from iharm.utils.metrics import METRIC_NAMES, MetricVariant, foreground_ratio, image_metrics

#: The official ``evaluate_model.py`` default datasets (HAdobe5k at full resolution).
DEFAULT_DATASETS = ("HFlickr", "HDay2Night", "HCOCO", "HAdobe5k1")
#: Largest number of pixels (images x H x W) in one forward: 8 images at 1024 x 1024.
DEFAULT_MAX_BATCH_PIXELS = 8 * 1024 * 1024


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


