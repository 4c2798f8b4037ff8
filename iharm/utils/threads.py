"""Thread counts for a block of work, restored afterwards.

torch's intra-op threads set the order of float32 sums (so the last bits of a
result) and, with OpenCV's own pool, how the cores are shared. A library call
that needs a count of its own (the benchmark's, a one-worker dataset build)
sets it for its block only and leaves the caller's process as it found it.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import torch


@contextmanager
def thread_count(threads: int, opencv: bool = False) -> Iterator[None]:
    """torch's (and with ``opencv`` also OpenCV's) thread count set to ``threads`` inside the block."""
    previous = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(threads)
    if opencv:
        cv2.setNumThreads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        if opencv:
            cv2.setNumThreads(previous[1])
