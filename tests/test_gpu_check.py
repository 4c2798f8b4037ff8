"""scripts/gpu_check.py on the CPU: its arguments, its figures' reading, and a quick run of its steps.

(The GPU figures themselves need a GPU machine: docs/performance.md says which are still unmeasured.)
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts/gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _module()


def test_bad_arguments_are_refused_before_any_step(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    existing = tmp_path / "old.json"
    existing.write_text("{}")
    cases = [(["--out", str(existing)], "exists; give a new file"),
             (["--out", str(tmp_path / "no/such/x.json")], "does not exist"),
             (["--out", str(tmp_path / "x.json"), "--device", "tpu"], "--device tpu: expected cuda or cpu"),
             (["--out", str(tmp_path / "x.json"), "--device", "cpu", "--repeats", "1"], "--repeats 1: must be >= 2")]
    if not torch.cuda.is_available():
        cases.append((["--out", str(tmp_path / "x.json")], "--device cuda: CUDA is not available"))
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            gpu_check.parse_args(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert existing.read_text() == "{}"


def test_the_40_gb_verdict_reads_the_1024_training_case() -> None:
    record = {"cases": [
        {"task": "train", "size": 256, "batch": 16, "variants": [{"variant": "plain", "memory": {"peak_mib": 9e9}}]},
        {"task": "train", "size": 1024, "batch": 4, "variants": [
            {"variant": "plain", "memory": {"peak_mib": 41000.0}},      # 43.0 GB: does not fit
            {"variant": "fast+bf16", "memory": {"peak_mib": 38000.0}},  # 39.8 GB: fits
            {"variant": "fast", "error": "OutOfMemoryError: ..."}]}]}
    assert gpu_check.fits_in_40gb(record) == {"plain": {"peak_mib": 41000.0, "fits_40gb": False},
                                               "fast+bf16": {"peak_mib": 38000.0, "fits_40gb": True}}


def test_a_quick_cpu_run_writes_one_json_of_every_step(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--repeats", "2",
                           "--out", str(out)],
                          capture_output=True, text=True, timeout=400, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["schema"] == "iharm-gpu-check/1" and result["machine"]["torch"] == torch.__version__
    assert [step["name"] for step in result["steps"]] == ["cuda_tests", "benchmark_train_256"]
    assert all(step["returncode"] == 0 and not step["timed_out"] for step in result["steps"])
    tests = result["cuda_tests"]
    assert tests["tests"] >= 5 and tests["failures"] == tests["errors"] == 0
    if not torch.cuda.is_available():
        assert tests["skipped"] == tests["tests"]  # said as skipped, with the reason, not passed
    (case,) = result["benchmarks"]["train_256"]["cases"]
    assert (case["task"], case["size"], case["batch"]) == ("train", 64, 2)
    assert {v["variant"] for v in case["variants"]} >= {"plain", "fast"}
    assert all(v["throughput_ips"] > 0 for v in case["variants"] if "error" not in v)
