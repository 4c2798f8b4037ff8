"""Device names as users give them, and the one default: the first GPU when CUDA is available, else the CPU."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def resolve_device(device: str | torch.device | None = "auto", flag: str = "device") -> torch.device:
    """``'auto'`` or None (CUDA when available, else the CPU), ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or a
    device; ValueError naming ``flag`` for a malformed name or a GPU this machine does not have."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{flag} {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{flag} {device!r}: CUDA is not available on this machine; use 'cpu' or 'auto'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"{flag} {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return resolved


def gpu_flag_device(gpu: str) -> torch.device:
    """The official ``--gpu``: a CUDA index (``0``, ``1`` ...) or ``cpu``."""
    if gpu.lower() == "cpu":
        return torch.device("cpu")
    if not gpu.isdigit():
        raise ValueError(f"--gpu {gpu}: expected a GPU index (0, 1, ...) or 'cpu'")
    return resolve_device(f"cuda:{gpu}", "--gpu")


@contextmanager
def full_float32() -> Iterator[None]:
    """Float32 matrix products and convolutions in full precision for the duration: TensorFloat-32 off.

    cuDNN computes float32 convolutions in TF32 by default on Ampere and later GPUs (10 mantissa bits), so
    without this an "exact" float32 evaluation would not be exact there. Restores the previous settings;
    changes nothing on the CPU, which has no TF32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
