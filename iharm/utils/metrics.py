"""Harmonization metrics, defined once for training validation and evaluation.

Per image, with prediction and target on the 0..255 scale at the evaluated
resolution and the mask in [0, 1] (after the same resize):

* ``MSE``   mean over H x W x 3 of (pred - target)^2
* ``fMSE``  sum(mask * err^2) / (3 * sum(mask) + 1e-6)   (foreground MSE)
* ``PSNR``  10 log10(peak^2 / (MSE + 1e-6))
* ``fPSNR`` 10 log10(peak^2 / (fMSE + 1e-6))
* ``SSIM``  Wang et al. 2004 (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03,
  data range 255), mean over the valid window positions and the 3 channels;
  equal to ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)``.

Defaults are the iSSAM / DucoNet definitions: the soft mask in fMSE and the
target's own maximum as the PSNR peak. The named variants used elsewhere in the
literature are :class:`MetricVariant` options; every table states its variant.
A dataset's value is the mean of its per-image values; an "Overall" row pools
images, i.e. weights datasets by image count.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

METRIC_NAMES = ("MSE", "fMSE", "PSNR", "fPSNR", "SSIM")


@dataclass(frozen=True)
class MetricVariant:
    """Which of the definitions in use: ``psnr_peak`` and ``fmse_mask``."""

    psnr_peak: Literal["gt_max", "255"] = "gt_max"
    fmse_mask: Literal["soft", "binary"] = "soft"

    def __post_init__(self) -> None:
        if self.psnr_peak not in ("gt_max", "255"):
            raise ValueError(f"psnr_peak must be 'gt_max' or '255', got {self.psnr_peak!r}")
        if self.fmse_mask not in ("soft", "binary"):
            raise ValueError(f"fmse_mask must be 'soft' or 'binary', got {self.fmse_mask!r}")

    def describe(self) -> str:
        return f"psnr_peak={self.psnr_peak}, fmse_mask={self.fmse_mask}"


def _gaussian_window(device: torch.device, dtype: torch.dtype, sigma: float = 1.5, radius: int = 5) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    weights = torch.exp(-0.5 * (x / sigma) ** 2)
    return weights / weights.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Per-image SSIM of (B, C, H, W) tensors (see the module docstring)."""
    channels = pred.shape[1]
    window = _gaussian_window(pred.device, pred.dtype)
    size = window.numel()
    if min(pred.shape[-2:]) < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size} pixels, got {tuple(pred.shape[-2:])}")
    horizontal = window.view(1, 1, 1, size).repeat(channels, 1, 1, 1)
    vertical = window.view(1, 1, size, 1).repeat(channels, 1, 1, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, horizontal, groups=channels), vertical, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(pred), blur(target)
    sigma_xx = blur(pred * pred) - mu_x * mu_x
    sigma_yy = blur(target * target) - mu_y * mu_y
    sigma_xy = blur(pred * target) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sigma_xx + sigma_yy + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def foreground_ratio(mask: torch.Tensor) -> torch.Tensor:
    """Per-image fraction of pixels with mask > 0.5 (how fg-ratio buckets are chosen), float64.

    In float64 the ratio is count / pixels correctly rounded, as the official
    numpy code computed it: an image with exactly 5 % foreground gives exactly
    ``0.05`` and lands on the bucket boundary (float32 would give 0.0500000007).
    """
    return (mask > 0.5).flatten(1).double().mean(dim=1)


#: Foreground-ratio buckets of the official per-ratio tables: [0, 5 %), [5 %, 15 %), [15 %, 100 %].
FG_RATIO_BUCKETS = ((0.0, 0.05), (0.05, 0.15), (0.15, 1.0))


def bucket_label(bucket: tuple[float, float]) -> str:
    """``'0%-5%'`` for (0.0, 0.05)."""
    return f"{round(100 * bucket[0])}%-{round(100 * bucket[1])}%"


def in_bucket(ratio: float, bucket: tuple[float, float], closed: bool = False) -> bool:
    """[a, b) with 1.0 in the last bucket; [a, b] with ``closed`` (the official counting)."""
    low, high = bucket
    if closed or high >= 1.0:
        return low <= ratio <= high
    return low <= ratio < high


def fg_bucket(ratio: float) -> str:
    """The label of the half-open :data:`FG_RATIO_BUCKETS` bucket that ``ratio`` (0..1) falls in."""
    for bucket in FG_RATIO_BUCKETS:
        if in_bucket(ratio, bucket):
            return bucket_label(bucket)
    raise ValueError(f"foreground ratio {ratio} outside [0, 1]")


@torch.no_grad()
def image_metrics(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                  variant: MetricVariant = MetricVariant(), with_ssim: bool = True,
                  dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Per-image metrics of a batch, as ``dtype`` tensors of shape (B,).

    ``pred`` and ``target`` are (B, 3, H, W) on the 0..255 scale (the prediction
    clamped, not rounded, as the official evaluation), ``mask`` is (B, 1, H, W).
    Evaluation computes in float64 (the published tables); the training log may
    use float32, which GPUs run many times faster.
    """
    if pred.shape != target.shape or pred.dim() != 4 or mask.shape[-2:] != pred.shape[-2:]:
        raise ValueError(f"image_metrics: shapes pred {tuple(pred.shape)}, target {tuple(target.shape)}, "
                         f"mask {tuple(mask.shape)} do not match (expected B3HW, B3HW, B1HW)")
    pred, target, mask = pred.to(dtype), target.to(dtype), mask.to(dtype)
    squared = (pred - target) ** 2
    mse = squared.mean(dim=(1, 2, 3))
    weight = (mask > 0.5).to(dtype) if variant.fmse_mask == "binary" else mask
    fmse = (weight * squared).sum(dim=(1, 2, 3)) / (squared.shape[1] * weight.sum(dim=(1, 2, 3)) + 1e-6)
    if variant.psnr_peak == "gt_max":
        peak_squared = target.flatten(1).max(dim=1).values ** 2
    else:
        peak_squared = torch.full_like(mse, 255.0 ** 2)
    metrics = {
        "MSE": mse,
        "fMSE": fmse,
        "PSNR": 10 * torch.log10(peak_squared / (mse + 1e-6)),
        "fPSNR": 10 * torch.log10(peak_squared / (fmse + 1e-6)),
    }
    if with_ssim:
        metrics["SSIM"] = ssim(pred, target)
    return metrics


class MetricsAccumulator:
    """Sums of per-image metrics; means on demand; mergeable across datasets and ranks.

    The sums stay float64 tensors on the metrics' device until a summary or an
    all-reduce reads them, so that accumulating costs no host-device sync."""

    def __init__(self) -> None:
        self.count = 0
        self.sums: dict[str, float | torch.Tensor] = {}
        self.time_sum = 0.0

    def update(self, metrics: Mapping[str, torch.Tensor], seconds: float = 0.0) -> None:
        """Add a batch of per-image metrics and the time it took to predict them."""
        sizes = {len(values) for values in metrics.values()}
        if len(sizes) != 1:
            raise ValueError(f"per-image metric tensors differ in length: {sizes}")
        self.count += sizes.pop()
        for name, values in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + values.detach().double().sum()
        self.time_sum += seconds

    def merge(self, other: MetricsAccumulator) -> None:
        self.count += other.count
        for name, value in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.time_sum += other.time_sum

    def all_reduce(self) -> None:
        """Sum over the ranks of the default process group (no-op when not distributed)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        names = sorted(self.sums)
        device = torch.device("cuda", torch.cuda.current_device()) \
            if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
        values = torch.stack([torch.as_tensor(v, dtype=torch.float64).to(device)
                              for v in (self.count, self.time_sum, *(self.sums[n] for n in names))])
        torch.distributed.all_reduce(values)
        values = values.cpu().tolist()
        self.count, self.time_sum = int(round(values[0])), values[1]
        self.sums = dict(zip(names, values[2:]))

    def summary(self) -> dict[str, float]:
        """``{'N': count, <metric>: mean, 'AvgTime': ms per image}``; NaN means when empty."""
        out: dict[str, float] = {"N": float(self.count)}
        for name, value in self.sums.items():
            out[name] = float(value) / self.count if self.count else math.nan
        out["AvgTime"] = 1000.0 * self.time_sum / self.count if self.count else math.nan
        return out


def overall(accumulators: Iterable[MetricsAccumulator]) -> MetricsAccumulator:
    """Image-weighted pool of several datasets' accumulators (the "Overall" row)."""
    total = MetricsAccumulator()
    for accumulator in accumulators:
        total.merge(accumulator)
    return total


def format_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str] = ("N", *METRIC_NAMES, "AvgTime"),
                 variant: MetricVariant | None = None, name_width: int = 20) -> str:
    """The official evaluation table: a name column, centred 2-decimal values, time in ms.

    SSIM is printed with 4 decimals (its values live in [0, 1]).
    """
    def width(column: str) -> int:
        return 14 if column == "AvgTime" else 10

    def cell(column: str, value: float | None) -> str:
        if value is None:
            text = "-"
        elif column == "N":
            text = str(int(value))
        elif column == "AvgTime":
            text = f"{value:.1f} ms"
        elif column == "SSIM":
            text = f"{value:.4f}"
        else:
            text = f"{value:.2f}"
        return f"{text:^{width(column)}}"

    header = f"{'Dataset':<{name_width}}|" + "|".join(f"{c:^{width(c)}}" for c in columns) + "|"
    rule = "-" * len(header)
    lines = []
    if variant is not None:
        lines.append(f"metrics: {variant.describe()}")
    lines += [rule, header, rule]
    for name, summary in rows.items():
        lines.append(f"{name:<{name_width}}|" + "|".join(cell(c, summary.get(c)) for c in columns) + "|")
    lines.append(rule)
    return "\n".join(lines)
