#!/usr/bin/env python
"""The prepared check for a GPU machine: CUDA tests and GPU figures in one JSON (issues 14 and 19).

    bash scripts/gpu_check.sh --out runs/gpu_check.json            # on one large GPU: under 8 minutes
    python scripts/gpu_check.py --device cpu --quick --out x.json  # the same steps, tiny, on the CPU

Steps, each in its own process with its own time limit (a step that fails or
runs out of time is recorded as such, and the next one runs):

1. ``tests/test_on_cuda.py``: fp32 prediction against the CPU (TF32 off), fp16
   BargainNet, ``--deterministic`` on CUDA, a GPU-written checkpoint loaded
   without CUDA, a ``torchrun --nproc_per_node=1`` NCCL run killed and resumed;
2. DucoNet 256 training throughput at batch 16 and 64: the official-style plain
   path against ours (fast path + channels_last, with bf16 autocast, compiled);
3. DucoNet 1024 training at batch 4 (peak memory: does it fit in 40 GB?), and
   1024 / 2048 inference time and memory.

The JSON holds the machine, each step's command, exit status and seconds, the
test counts and the benchmark records (``scripts/benchmark.py``'s own JSON).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import torch

from iharm.utils.files import atomic_write_text
from iharm.utils.machine import cpu_model_and_flags

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "iharm-gpu-check/1"
FORTY_GB_MIB = 40 * 1000 ** 3 / 2 ** 20
#: (name, benchmark cases, seconds allowed) on a GPU, and the tiny cases of ``--quick``.
BENCHMARKS = (("train_256", "train:256:16,train:256:64", 200), ("large", "train:1024:4,infer:1024:1,infer:2048:1", 150))
QUICK_BENCHMARKS = (("train_256", "train:64:2", 120),)
TESTS_SECONDS = 150


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write (a new file)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --quick: the steps' smoke run)")
    parser.add_argument("--quick", action="store_true",
                        help="one tiny benchmark case, no compile, no memory probes (checks the steps)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per benchmark variant")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"--out {args.out}: exists; give a new file (results are never overwritten)")
    if not args.out.parent.is_dir():
        parser.error(f"--out {args.out}: the folder {args.out.parent} does not exist")
    if args.device not in ("cuda", "cpu"):
        parser.error(f"--device {args.device}: expected cuda or cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine (--device cpu --quick checks the steps)")
    if args.repeats < 2:
        parser.error(f"--repeats {args.repeats}: must be >= 2")
    return args


def run_step(name: str, command: list[str], seconds: float) -> dict[str, Any]:
    """Run one step's command with a time limit; its record (the output's last lines if it failed)."""
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=seconds)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code, output = None, f"{exc.stdout or ''}{exc.stderr or ''}"
        output = output.decode(errors="replace") if isinstance(output, bytes) else output
    record = {"name": name, "command": " ".join(command), "returncode": code, "timed_out": code is None,
              "seconds": round(time.monotonic() - started, 1)}
    if code != 0:
        record["output_tail"] = output[-3000:]
    print(f"{name}: {'timed out' if code is None else f'exit {code}'} after {record['seconds']} s", flush=True)
    return record


def test_counts(junit: Path) -> dict[str, int]:
    """Tests, failures, errors and skips of a pytest JUnit XML file (empty when it was not written)."""
    if not junit.is_file():
        return {}
    suite = ElementTree.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}


def fits_in_40gb(record: dict[str, Any]) -> dict[str, Any]:
    """For each variant of the 1024 px training case: its peak memory and whether it stays under 40 GB."""
    out: dict[str, Any] = {}
    for case in record.get("cases", []):
        if case["task"] == "train" and case["size"] == 1024:
            for variant in case["variants"]:
                peak = (variant.get("memory") or {}).get("peak_mib")
                if peak is not None:
                    out[variant["variant"]] = {"peak_mib": peak, "fits_40gb": peak < FORTY_GB_MIB}
    return out


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "cpu": cpu_model_and_flags()[0]}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_mib=props.total_memory / 2 ** 20, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result: dict[str, Any] = {"schema": SCHEMA, "machine": machine(), "device": args.device, "quick": args.quick,
                              "steps": [], "benchmarks": {}}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        junit = Path(scratch) / "cuda_tests.xml"
        result["steps"].append(run_step("cuda_tests", [sys.executable, "-m", "pytest", "-q", "-rs", "-p",
                                                       "no:cacheprovider", "tests/test_on_cuda.py",
                                                       f"--junitxml={junit}"], TESTS_SECONDS))
        result["cuda_tests"] = test_counts(junit)
        for name, cases, seconds in QUICK_BENCHMARKS if args.quick else BENCHMARKS:
            record_path = Path(scratch) / f"{name}.json"
            command = [sys.executable, "scripts/benchmark.py", "--model", "DucoNet", "--device", args.device,
                       "--cases", cases, "--repeats", str(args.repeats), "--ablation-max-size", "0",
                       "--json", str(record_path)]
            if args.quick:
                command.append("--no-memory")
            elif name == "train_256":
                command.append("--compile")
            result["steps"].append(run_step(f"benchmark_{name}", command, seconds))
            if record_path.is_file():
                result["benchmarks"][name] = json.loads(record_path.read_text())
    result["training_1024_b4"] = fits_in_40gb(result["benchmarks"].get("large", {}))
    atomic_write_text(args.out, json.dumps(result, indent=1))
    failed = [step["name"] for step in result["steps"] if step["returncode"] != 0]
    print(f"wrote {args.out}" + (f"; steps that failed or timed out: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
