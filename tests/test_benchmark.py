"""scripts/benchmark.py and iharm.tools.benchmark: what a run reports, not how fast it is.

A tiny run (iSSAM at 64 px, 2 repeats) must produce the documented JSON
schema, compare every variant with the plain path (exact variants within a
small multiple of the plain path's measured float32 rounding), keep the plain variant the official algorithm, and measure memory.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iharm.model.fast_path import FastPath
from iharm.model.registry import get_model_spec
from float_bounds import EPS32, K
from iharm.tools.benchmark import (FAST, PLAIN, SCHEMA, Case, Settings, Workload, build_model, format_report,
                                   make_batch, make_photo_test_set, measure_memory, run_benchmark, summarize)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run():
    settings = Settings(model="iSSAM", cases=[Case("infer", 64, 2), Case("train", 64, 2)], repeats=2, warmup=0,
                        threads=1, memory=False, bf16=True)
    return run_benchmark(settings, log=lambda line: None)


def test_schema_and_system_information(tiny_run):
    assert tiny_run["schema"] == SCHEMA and tiny_run["model"] == "iSSAM"
    assert tiny_run["parameters"] == sum(p.numel() for p in get_model_spec("iSSAM").build().parameters())
    system = tiny_run["system"]
    for key in ("device", "cpu_model", "threads", "torch", "onednn", "cpu_features", "thread_env"):
        assert key in system, key
    assert system["threads"] == 1
    json.dumps(tiny_run)  # JSON-ready as it is


def test_every_variant_is_timed_and_compared_with_the_plain_path(tiny_run):
    infer, train = tiny_run["cases"]
    assert (infer["task"], infer["size"], infer["batch"]) == ("infer", 64, 2)
    names = [entry["variant"] for entry in infer["variants"]]
    assert names[:4] == ["plain", "fast", "load_model call", "fast+bf16"]
    assert {"plain+fold_batchnorm", "plain+crop_to_mask", "plain+channels_last", "plain+batched"} <= set(names)
    assert "plain+pack_styles" not in names  # iSSAM has no control modules
    for record in (infer, train):
        assert len(record["load_average"]) == 2
        plain_median = record["variants"][0]["latency_s"]["median"]
        for entry in record["variants"]:
            assert "error" not in entry, entry
            latency = entry["latency_s"]
            assert latency["n"] == 2 and latency["min"] <= latency["q1"] <= latency["median"] <= latency["q3"] \
                <= latency["max"]
            assert entry["throughput_ips"] == pytest.approx(2 / latency["median"])
            assert entry["speedup"] == pytest.approx(plain_median / latency["median"])
            assert entry["macs_g"] > 0
    plain = infer["variants"][0]
    assert plain["speedup"] == 1.0 and plain["per_image"] and not plain["channels_last"]
    # the official call: the model as load_model makes it, called one image at a time with contiguous tensors
    official = next(e for e in infer["variants"] if e["variant"] == "load_model call")
    assert official["as_loaded"] and official["per_image"] and not official["channels_last"]
    assert all(official["fast_path"].values())
    assert not any(plain["fast_path"].values())
    # Exact variants lie within K + 1 times the plain path's own float32 rounding (float_bounds.py), which
    # the benchmark measures against a float64 run; bf16 is not exact: only its output and loss are bounded.
    for record in (infer, train):
        noise = record["variants"][0]["float32_noise"]
        assert all(0 < value < 1e-2 for value in noise.values()), noise
        for entry in record["variants"][1:]:
            if entry["precision"] == "bf16":
                assert entry.get("max_abs_diff", 0) <= 0.05 and entry.get("loss_rel_diff", 0) <= 1e-2
                continue
            for measure, value in noise.items():
                assert entry[measure] <= (K + 1) * max(value, EPS32), (entry["variant"], measure)
    # cropping the attention's learning block to the mask does less work than the plain path
    crop = next(e for e in infer["variants"] if e["variant"] == "plain+crop_to_mask")
    assert crop["macs_g"] < plain["macs_g"]
    # the fused conv + ReLU calls of the fast path are counted as convolutions
    fast = next(e for e in infer["variants"] if e["variant"] == "fast")
    assert fast["macs_g"] == pytest.approx(crop["macs_g"])


def test_report_lists_every_case_and_variant(tiny_run):
    report = format_report(tiny_run)
    assert "infer 64px batch 2" in report and "train 64px batch 2" in report
    assert report.count("plain+channels_last") == 2 and report.count("f32 noise") == 2


def test_memory_probe_reports_the_peak_above_the_idle_process():
    """In a fresh process (as documented: in the test process, freed heap from earlier tests hides the
    call's pages), the peak above idle holds at least the largest activation the call makes."""
    case = Case("infer", 256, 1)
    spec = get_model_spec("iSSAM")
    largest = []
    model = build_model(spec, None, 0)
    for module in model.modules():
        module.register_forward_hook(lambda m, i, o: largest.append(o.numel() * o.element_size() / 2 ** 20)
                                     if isinstance(o, torch.Tensor) else None)
    Workload(spec, model, case, PLAIN, make_batch(spec, case, 0), torch.device("cpu")).run()
    assert max(largest) == 16.0  # 32 channels x 256 x 256 float32
    result = measure_memory(Settings(model="iSSAM", threads=1), case, PLAIN)
    assert "error" not in result, result
    assert max(largest) <= result["peak_mib"] < 4096 and result["method"].startswith("VmHWM")
    assert result["idle_mib"] > 100  # torch and the model are loaded
    assert FastPath(**PLAIN.describe()["fast_path"]) == FastPath.plain()  # what the probe rebuilds it from


def test_summarize_spread():
    assert summarize([3.0, 1.0, 2.0, 4.0]) == {"median": 2.5, "min": 1.0, "max": 4.0, "q1": 1.75, "q3": 3.25, "n": 4}
    assert summarize([2.0])["q1"] == 2.0


def test_fast_variant_is_the_library_default():
    assert FAST.fast_path == FastPath() and FAST.channels_last and not FAST.per_image


def test_photo_test_set_is_an_iharmony4_layout(tmp_path):
    folder = make_photo_test_set(tmp_path, count=2, longest_side=128)
    names = (folder / "PhotoTest_test.txt").read_text().split()
    assert names == ["p0_1_1.jpg", "p1_1_1.jpg"]
    for name in names:
        stem = name.rsplit("_", 1)[0]
        assert (folder / "composite_images" / name).is_file()
        assert (folder / "masks" / f"{stem}.png").is_file()
        assert (folder / "real_images" / f"{stem.split('_')[0]}.jpg").is_file()


def test_command_line_writes_json_and_table(tmp_path):
    output = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--model", "iSSAM",
                           "--cases", "infer:32:1", "--repeats", "1", "--no-memory", "--no-bf16",
                           "--ablation-max-size", "0", "--threads", "1", "--json", str(output)],
                          capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(output.read_text())
    assert [e["variant"] for e in result["cases"][0]["variants"]] == ["plain", "fast", "load_model call"]
    assert "infer 32px batch 1" in done.stdout and str(output) in done.stdout
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--model", "iSSAM",
                          "--cases", "infer:32"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "task:size:batch" in bad.stderr
