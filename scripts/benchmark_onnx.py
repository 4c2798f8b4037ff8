#!/usr/bin/env python
"""Time onnxruntime on the exported graph against PyTorch (our fast path), on the CPU.

    python scripts/benchmark_onnx.py                                  # DucoNet and iSSAM, 256 and 1024, 2 threads
    python scripts/benchmark_onnx.py --models DucoNet --sizes 256 --repeats 9

Each model (seeded random weights: the weights do not change the time) is
exported once at 256 (``iharm.inference.onnx_export``) and both runtimes get
the same batch-1 input at every size. Three calls are timed: the model called
the official way (``model(image, mask, ...)``, contiguous tensors, our fast
path), the same model and inputs in channels_last (what the Predictor, and so
the Harmonizer, run on the CPU), and onnxruntime. Each gets a warm-up call,
then ``--repeats`` rounds alternate between them, so that a load change on the
machine falls on all three. Prints a Markdown table (median and min in ms, the
ratio of onnxruntime's median to the channels_last one, the largest output
difference) headed by the CPU, its kernel flags, the thread count and the load
average; ``--json`` also writes it.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from iharm.inference.onnx_export import example_inputs, export_onnx, onnx_feed, onnx_session
from iharm.model.registry import MODELS, get_model_spec
from iharm.utils.files import atomic_write_text
from iharm.utils.machine import cpu_model_and_flags, kernel_flags
from iharm.utils.threads import thread_count


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["DucoNet", "iSSAM"], choices=[m for m in MODELS if m != "BargainNet"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 1024])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def time_alternating(calls: list, repeats: int) -> list[list[float]]:
    """Seconds per call of each, warm-up excluded, calls alternating round by round."""
    for call in calls:
        call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for call, out in zip(calls, times):
            start = time.perf_counter()
            call()
            out.append(time.perf_counter() - start)
    return times


def benchmark(model_name: str, sizes: list[int], threads: int, repeats: int, folder: Path) -> list[dict]:
    spec = get_model_spec(model_name)
    torch.manual_seed(0)
    model = spec.build().eval()
    path = folder / f"{model_name}.onnx"
    export_onnx(model_name, model, path, 256)
    session = onnx_session(path, threads)
    model_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    rows = []
    for size in sizes:
        inputs = example_inputs(model_name, 1, size, size)
        kwargs = {arg: inputs[arg] for arg in spec.inputs}
        feed = onnx_feed(session, inputs)
        last = {arg: x.contiguous(memory_format=torch.channels_last) for arg, x in kwargs.items()}

        def torch_call() -> torch.Tensor:
            with torch.inference_mode():
                return model(**kwargs)["images"]

        def channels_last_call() -> torch.Tensor:
            with torch.inference_mode():
                return model_last(**last)["images"]

        torch_times, last_times, ort_times = time_alternating(
            [torch_call, channels_last_call, lambda: session.run(None, feed)], repeats)
        difference = float(np.abs(session.run(None, feed)[0] - torch_call().numpy()).max())
        rows.append({"model": model_name, "size": size, "torch_ms": [t * 1e3 for t in torch_times],
                     "torch_channels_last_ms": [t * 1e3 for t in last_times],
                     "onnxruntime_ms": [t * 1e3 for t in ort_times], "max_abs_difference": difference})
    return rows


def table(rows: list[dict], threads: int, load: tuple[float, float, float]) -> str:
    cpu, _ = cpu_model_and_flags()
    flags = ", ".join(name for name, present in kernel_flags().items() if present)
    lines = [f"CPU: {cpu} ({flags}); {threads} threads; torch {torch.__version__}, onnxruntime "
             f"{__import__('onnxruntime').__version__}; load average before {load[0]:.2f}", "",
             "| model | size | PyTorch, official call, ms (median / min) | PyTorch, channels_last (Predictor), ms "
             "| onnxruntime, ms | onnxruntime / channels_last | max abs difference |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        t, c, o = (statistics.median(row[key]) for key in ("torch_ms", "torch_channels_last_ms", "onnxruntime_ms"))
        lines.append(f"| {row['model']} | {row['size']} | {t:.0f} / {min(row['torch_ms']):.0f} | "
                     f"{c:.0f} / {min(row['torch_channels_last_ms']):.0f} | "
                     f"{o:.0f} / {min(row['onnxruntime_ms']):.0f} | {o / c:.2f}x | {row['max_abs_difference']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load = os.getloadavg()
    rows = []
    with thread_count(args.threads), tempfile.TemporaryDirectory() as folder:
        for model_name in args.models:
            rows += benchmark(model_name, args.sizes, args.threads, args.repeats, Path(folder))
    report = table(rows, args.threads, load)
    print(report)
    if args.json is not None:
        cpu, _ = cpu_model_and_flags()
        atomic_write_text(args.json, json.dumps({"cpu": cpu, "flags": kernel_flags(), "threads": args.threads,
                                                 "load_average": load, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
