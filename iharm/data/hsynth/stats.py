"""Composite-vs-real statistics of HSynth: iSSAM's metrics at 256x256.

Per image, composite and real are resized to 256x256 (bilinear) and the mask
too (bilinear, kept soft), as the Fixed256 evaluation sees them; MSE, fMSE and
PSNR then come from :func:`iharm.utils.metrics.image_metrics` with its
default (iSSAM) variant: soft-mask fMSE, the target's own maximum as PSNR peak.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from iharm.utils.metrics import image_metrics

EVAL_SIZE = 256


def composite_stats(composite: np.ndarray, real: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """{'mse', 'fmse', 'psnr'} of ``composite`` against ``real`` (uint8 RGB HxWx3) under ``mask``.

    ``mask`` is HxW, uint8 0..255 or float 0..1.
    """
    size = (EVAL_SIZE, EVAL_SIZE)
    comp = cv2.resize(composite, size, interpolation=cv2.INTER_LINEAR)
    target = cv2.resize(real, size, interpolation=cv2.INTER_LINEAR)
    soft = mask.astype(np.float32) / (255.0 if mask.dtype == np.uint8 else 1.0)
    soft = cv2.resize(soft, size, interpolation=cv2.INTER_LINEAR)
    metrics = image_metrics(
        torch.from_numpy(comp).permute(2, 0, 1)[None].double(),
        torch.from_numpy(target).permute(2, 0, 1)[None].double(),
        torch.from_numpy(soft)[None, None].double(),
        with_ssim=False,
    )
    return {"mse": float(metrics["MSE"][0]), "fmse": float(metrics["fMSE"][0]), "psnr": float(metrics["PSNR"][0])}
