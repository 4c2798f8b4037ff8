"""Composite-vs-real statistics with iSSAM's metric definitions, at 256x256.

Per image, after resizing composite and real (bilinear) and the mask (bilinear,
kept soft) to 256x256: MSE is the mean over HxWx3 of the squared error on
0..255; fMSE = sum(mask * err^2) / (3 * sum(mask) + 1e-6); PSNR =
10 log10(max(target)^2 / (MSE + 1e-6)) with the target's own maximum.

This is a private stand-in until the project's single metric module
(``iharm/inference/metrics.py``) exists; then this module should call it.
"""
from __future__ import annotations

import cv2
import numpy as np

EVAL_SIZE = 256


def composite_stats(composite: np.ndarray, real: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """{'mse', 'fmse', 'psnr'} of ``composite`` against ``real`` (uint8 RGB) under ``mask``.

    ``mask`` is HxW, uint8 0..255 or float 0..1.
    """
    size = (EVAL_SIZE, EVAL_SIZE)
    comp = cv2.resize(composite, size, interpolation=cv2.INTER_LINEAR).astype(np.float64)
    target = cv2.resize(real, size, interpolation=cv2.INTER_LINEAR).astype(np.float64)
    soft = mask.astype(np.float32) / (255.0 if mask.dtype == np.uint8 else 1.0)
    soft = cv2.resize(soft, size, interpolation=cv2.INTER_LINEAR).astype(np.float64)
    err = (comp - target) ** 2
    mse = float(err.mean())
    fmse = float((err * soft[:, :, None]).sum() / (3.0 * soft.sum() + 1e-6))
    psnr = float(10.0 * np.log10(target.max() ** 2 / (mse + 1e-6)))
    return {"mse": mse, "fmse": fmse, "psnr": psnr}
