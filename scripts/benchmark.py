#!/usr/bin/env python
"""Benchmark a registered model: the plain path against each optimisation, in one run.

    python scripts/benchmark.py --model DucoNet                       # the default matrix, 2 threads
    python scripts/benchmark.py --model DucoNet --cases infer:256:1,train:256:4 --repeats 9
    python scripts/benchmark.py --model iSSAM --cases infer:64:1 --repeats 2 --no-memory
    python scripts/benchmark.py --model DucoNet --cases none --end-to-end datasets/HSynth

Prints one table per case (median latency and its spread, images/s, speed-up
over the plain path in wall and CPU time, peak memory above the idle process
and its ratio, GMACs, exactness against the plain path) and writes everything,
with the machine, threads and versions, as JSON (``--json``). Timings on a
shared machine are noisy: compare the ratios of one run, and note the load
average printed with every case. See :mod:`iharm.tools.benchmark` and
docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import torch

from iharm.model.registry import MODELS
from iharm.tools.benchmark import (DEFAULT_CASES, END_TO_END_STRATEGIES, Case, Settings, end_to_end, format_report,
                                   has_test_split, make_photo_test_set, run_benchmark, subset_view)


def parse_cases(text: str) -> list[Case]:
    """``task:size:batch`` items, comma-separated ('none' for no cases)."""
    if text == "none":
        return []
    cases = []
    for item in text.split(","):
        try:
            task, size, batch = item.split(":")
            cases.append(Case(task, int(size), int(batch)))
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"bad case {item!r}: expected task:size:batch with task infer or "
                                             f"train, e.g. infer:256:1 ({error})") from None
    return cases


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", required=True, choices=list(MODELS))
    parser.add_argument("--checkpoint", default=None, help="weights to load strictly (default: seeded init)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:index]")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--cases", type=parse_cases, default=list(DEFAULT_CASES),
                        help="comma-separated task:size:batch (default: "
                             + ",".join(f"{c.task}:{c.size}:{c.batch}" for c in DEFAULT_CASES) + ")")
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed calls per variant at 256 px (fewer for bigger images, at least 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls after the first one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast variant")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile variant (slow to compile)")
    parser.add_argument("--ablation-max-size", type=int, default=256,
                        help="add the plain+<option> variants to cases up to this size (0: none)")
    parser.add_argument("--end-to-end", type=Path, nargs="?", const=Path("datasets/HSynth"), default=None,
                        help="also time the evaluation loop on this iHarmony4-layout folder (default "
                             "datasets/HSynth; a photo test set is generated when it has no test split)")
    parser.add_argument("--end-to-end-strategies", default=",".join(END_TO_END_STRATEGIES))
    parser.add_argument("--end-to-end-limit", type=int, default=24,
                        help="evaluate this many test images, spread over the list (0: all)")
    parser.add_argument("--json", type=Path, default=None,
                        help="result file (default: runs/benchmark/<model>_<time>.json)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--threads and --repeats must be at least 1, --warmup at least 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(model=args.model, cases=args.cases, checkpoint=args.checkpoint, device=args.device,
                        threads=args.threads, seed=args.seed, warmup=args.warmup, repeats=args.repeats,
                        memory=not args.no_memory, bf16=not args.no_bf16, compile=args.compile,
                        ablation_max_size=args.ablation_max_size)
    result = run_benchmark(settings, log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.end_to_end is not None:
        strategies = [s for s in args.end_to_end_strategies.split(",") if s]
        with tempfile.TemporaryDirectory() as scratch:
            if has_test_split(args.end_to_end):
                source = str(args.end_to_end)
                dataset = (subset_view(args.end_to_end, args.end_to_end_limit, Path(scratch))
                           if args.end_to_end_limit else args.end_to_end)
            else:
                source = f"generated photo test set ({args.end_to_end} has no test split)"
                dataset = make_photo_test_set(Path(scratch), count=args.end_to_end_limit or 16)
            print(f"end to end on {dataset} ...", file=sys.stderr, flush=True)
            runs = end_to_end(settings, dataset, strategies, log=lambda line: print(line, file=sys.stderr, flush=True))
            result["end_to_end"] = {"dataset": source, "limit": args.end_to_end_limit, "runs": runs}
    print(format_report(result))
    path = args.json or Path("runs/benchmark") / f"{args.model}_{datetime.now():%Y-%m-%d_%H-%M-%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
