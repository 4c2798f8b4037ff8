"""The CPU a figure was measured on: its model name and the instruction-set flags that pick the kernels.

Speed (and, in the last bits, float32 rounding) depends on the CPU kind: AVX2
against AVX-512, and native bf16 (``avx512_bf16``, AMX) or not. Every report
that prints a figure names the CPU with these.
"""
from __future__ import annotations

import platform
import re
from functools import lru_cache
from pathlib import Path

#: Flags that decide which CPU kernels PyTorch and oneDNN run.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


@lru_cache(maxsize=1)
def cpu_model_and_flags() -> tuple[str, frozenset[str]]:
    """(model name, flags) from ``/proc/cpuinfo``; (``platform.processor()``, no flags) where it is absent."""
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M).group(1)
        flags = frozenset(re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M).group(1).split())
    except (OSError, AttributeError):
        pass
    return model, flags


def kernel_flags() -> dict[str, bool]:
    """{flag: present} for :data:`KERNEL_FLAGS`."""
    flags = cpu_model_and_flags()[1]
    return {name: name in flags for name in KERNEL_FLAGS}


def native_bf16() -> bool:
    """True when the CPU computes bf16 natively (``avx512_bf16`` or AMX), where bf16 autocast pays."""
    flags = cpu_model_and_flags()[1]
    return "avx512_bf16" in flags or "amx_bf16" in flags
