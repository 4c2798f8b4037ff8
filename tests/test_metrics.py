"""Metrics against independent numpy / scikit-image formulas and hand-made cases."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from iharm.data.io import read_image, read_mask
from iharm.utils.metrics import (MetricsAccumulator, MetricVariant, foreground_ratio, format_table,
                                 image_metrics, overall)


def _tensors(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(pred).permute(2, 0, 1)[None].float(), torch.from_numpy(target).permute(2, 0, 1)[None].float(),
            torch.from_numpy(mask)[None, None].float())


def _numpy_reference(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, peak: float | None) -> dict[str, float]:
    pred, target, mask = pred.astype(np.float64), target.astype(np.float64), mask.astype(np.float64)
    err = (pred - target) ** 2
    mse = err.mean()
    fmse = (mask[..., None] * err).sum() / (3 * mask.sum() + 1e-6)
    peak = target.max() if peak is None else peak
    return {"MSE": mse, "fMSE": fmse, "PSNR": 10 * math.log10(peak ** 2 / (mse + 1e-6)),
            "fPSNR": 10 * math.log10(peak ** 2 / (fmse + 1e-6))}


def _triplets(shared_data: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Real composite / real / mask triplets at 256 px (the Fixed256 evaluation size)."""
    out = []
    for k in (1, 2, 3):
        folder = shared_data / "triplets/rainnet_256"
        out.append((read_image(folder / f"{k}.png"), read_image(folder / f"{k}-gt.png"), read_mask(folder / f"{k}-mask.png")))
    folder = shared_data / "triplets/inr_2k"
    resized = [cv2.resize(a, (256, 256), interpolation=cv2.INTER_LINEAR) for a in
               (read_image(folder / "demo_2k_composite.jpg"), read_image(folder / "demo_2k_real.jpg"),
                read_mask(folder / "demo_2k_mask.jpg"))]
    out.append(tuple(resized))
    return out


@pytest.mark.parametrize("variant", [MetricVariant(), MetricVariant(psnr_peak="255"),
                                     MetricVariant(fmse_mask="binary")])
def test_metrics_match_numpy_on_real_triplets(shared_data: Path, variant: MetricVariant) -> None:
    for comp, real, mask in _triplets(shared_data):
        used_mask = (mask > 0.5).astype(np.float32) if variant.fmse_mask == "binary" else mask
        expected = _numpy_reference(comp, real, used_mask, 255.0 if variant.psnr_peak == "255" else None)
        got = image_metrics(*_tensors(comp, real, mask), variant=variant)
        for name, value in expected.items():
            assert float(got[name][0]) == pytest.approx(value, rel=1e-9), name
        assert expected["fMSE"] > expected["MSE"] > 0  # composites differ, more so inside the mask


def test_float32_training_metrics_stay_within_a_measured_bound(shared_data: Path) -> None:
    """The training log's float32 metrics against the float64 numpy formulas. Measured worst relative error
    1.4e-7 (Intel Xeon, AVX-512); the bound 1e-5 leaves room for other summation orders, and the same
    metrics computed in float16 (worst 2.5e-4 here) break it."""
    def worst(dtype: torch.dtype, names: tuple[str, ...]) -> float:
        error = 0.0
        for comp, real, mask in _triplets(shared_data):
            expected = _numpy_reference(comp, real, mask, None)
            got = image_metrics(*_tensors(comp, real, mask), with_ssim=False, dtype=dtype)
            assert all(v.dtype == dtype for v in got.values())
            error = max(error, *(abs(float(got[name][0]) / expected[name] - 1) for name in names))
        return error

    assert worst(torch.float32, ("MSE", "fMSE", "PSNR")) < 1e-5
    assert worst(torch.float16, ("MSE", "PSNR")) > 1e-5  # (its fMSE overflows to inf / NaN)


def test_accumulating_keeps_sums_on_the_device_until_read() -> None:
    accumulator = MetricsAccumulator()
    for values in ([1.0, 2.0], [4.0]):
        accumulator.update({"MSE": torch.tensor(values)})
    assert isinstance(accumulator.sums["MSE"], torch.Tensor)  # no float() per step: no host-device sync
    assert accumulator.summary() == {"N": 3.0, "MSE": 7 / 3, "AvgTime": 0.0}


def test_ssim_matches_scikit_image(shared_data: Path) -> None:
    for comp, real, mask in _triplets(shared_data):
        expected = structural_similarity(comp.astype(np.float64), real.astype(np.float64), gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)
        got = float(image_metrics(*_tensors(comp, real, mask))["SSIM"][0])
        assert got == pytest.approx(expected, abs=1e-9)
        assert 0.5 < got < 1.0


def test_identical_images() -> None:
    image = np.random.default_rng(0).integers(0, 200, (64, 48, 3)).astype(np.float32)
    mask = np.zeros((64, 48), np.float32)
    mask[10:30, 5:25] = 1
    got = image_metrics(*_tensors(image, image, mask))
    assert float(got["MSE"][0]) == 0 and float(got["fMSE"][0]) == 0
    assert float(got["PSNR"][0]) == pytest.approx(10 * math.log10(image.max() ** 2 / 1e-6))
    assert float(got["SSIM"][0]) == pytest.approx(1.0)


def test_constant_offset_inside_the_mask() -> None:
    target = np.full((40, 50, 3), 100, np.float32)
    target[0, 0] = 200  # the target's own peak
    mask = np.zeros((40, 50), np.float32)
    mask[10:20, 10:30] = 1  # 200 pixels, 10 % of the image
    pred = target + 10 * mask[..., None]
    got = image_metrics(*_tensors(pred, target, mask))
    assert float(got["MSE"][0]) == pytest.approx(100 * 0.1)
    assert float(got["fMSE"][0]) == pytest.approx(100, rel=1e-6)
    assert float(got["PSNR"][0]) == pytest.approx(10 * math.log10(200 ** 2 / 10.000001))
    peak255 = image_metrics(*_tensors(pred, target, mask), variant=MetricVariant(psnr_peak="255"))
    assert float(peak255["PSNR"][0]) == pytest.approx(10 * math.log10(255 ** 2 / 10.000001))
    assert float(got["fPSNR"][0]) == pytest.approx(10 * math.log10(200 ** 2 / 100.000001), rel=1e-6)


def test_soft_and_binary_fmse_differ_on_soft_masks() -> None:
    target = np.zeros((20, 20, 3), np.float32)
    pred = np.full((20, 20, 3), 10, np.float32)
    mask = np.zeros((20, 20), np.float32)
    mask[:, :10] = 0.75
    soft = float(image_metrics(*_tensors(pred, target, mask))["fMSE"][0])
    binary = float(image_metrics(*_tensors(pred, target, mask), variant=MetricVariant(fmse_mask="binary"))["fMSE"][0])
    assert soft == pytest.approx(100, rel=1e-6) and binary == pytest.approx(100, rel=1e-6)
    mask[:, :5] = 0.25  # below 0.5: out of the binary mask, in the soft one with weight 0.25
    pred[:, :5] = 20
    soft = float(image_metrics(*_tensors(pred, target, mask))["fMSE"][0])
    binary = float(image_metrics(*_tensors(pred, target, mask), variant=MetricVariant(fmse_mask="binary"))["fMSE"][0])
    assert soft == pytest.approx((0.25 * 400 * 100 + 0.75 * 100 * 100) / (0.25 * 100 + 0.75 * 100), rel=1e-6)
    assert binary == pytest.approx(100, rel=1e-6)


def test_accumulation_and_overall_weight_by_image_count() -> None:
    a, b = MetricsAccumulator(), MetricsAccumulator()
    a.update({"MSE": torch.tensor([1.0, 3.0])}, seconds=0.2)
    b.update({"MSE": torch.tensor([10.0])}, seconds=0.1)
    assert a.summary()["MSE"] == 2.0 and a.summary()["AvgTime"] == pytest.approx(100.0)
    pooled = overall([a, b]).summary()
    assert pooled["N"] == 3 and pooled["MSE"] == pytest.approx(14 / 3)  # not the mean of means (6.0)
    table = format_table({"A": a.summary(), "Overall": pooled}, columns=("N", "MSE", "AvgTime"),
                         variant=MetricVariant())
    assert "psnr_peak=gt_max, fmse_mask=soft" in table and "4.67" in table and "100.0 ms" in table


def test_foreground_ratio_and_bad_shapes() -> None:
    mask = torch.zeros(1, 1, 10, 10)
    mask[..., :5, :] = 0.6
    mask[..., 5:6, :] = 0.5  # exactly 0.5 is not foreground
    assert float(foreground_ratio(mask)[0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shapes"):
        image_metrics(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="psnr_peak"):
        MetricVariant(psnr_peak="max")
