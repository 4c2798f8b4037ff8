"""Engine features of the time-bounded HSynth recipes: the warm-up + cosine schedule (in steps or in
seconds of training time), per-step scheduling and time snapshots in the trainer, and the fusion-gate
initialisation that starts iSSAM / DucoNet at the composite."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iharm.engine.schedules import WarmupCosineLR, warmup_cosine_factor
from iharm.engine.training_state import load_training_state
from iharm.model.initializer import start_at_composite
from iharm.model.registry import get_model_spec
from tiny_data import make_dataset

REPO = Path(__file__).resolve().parents[1]


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_cosine_in_steps_matches_the_formula() -> None:
    optimizer = _optimizer(2.0)
    scheduler = WarmupCosineLR(optimizer, horizon=10, warmup=2, final_ratio=0.1)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(12):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    # warm-up 0.01 -> 1 over 2 steps, then 0.1 + 0.9 * (1 + cos(pi * (s - 2) / 8)) / 2, then 0.1
    expected = [0.01, 0.505, *(0.1 + 0.45 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 11)), 0.1, 0.1]
    assert lrs == pytest.approx([2.0 * e for e in expected])
    with pytest.raises(ValueError, match="warm-up"):
        warmup_cosine_factor(0.5, warmup=1.0, final_ratio=0.0)


def test_warmup_cosine_in_seconds_follows_the_clock_and_resumes_from_the_elapsed_time() -> None:
    now = [100.0]
    optimizer = _optimizer(1.0)
    scheduler = WarmupCosineLR(optimizer, horizon=60, warmup=0, final_ratio=0.0, unit="seconds",
                               clock=lambda: now[0])
    now[0] = 130.0  # half of the horizon
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    state = scheduler.state_dict()
    assert state["elapsed_seconds"] == pytest.approx(30.0)
    later = [5000.0]  # another process, another clock origin
    resumed_optimizer = _optimizer(1.0)
    resumed = WarmupCosineLR(resumed_optimizer, horizon=60, warmup=0, unit="seconds", clock=lambda: later[0])
    resumed.load_state_dict(state)
    later[0] += 15.0  # 45 of 60 seconds
    resumed_optimizer.step()
    resumed.step()
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))
    later[0] += 100.0
    resumed_optimizer.step()
    resumed.step()
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(0.0)


def test_start_at_composite_outputs_the_composite() -> None:
    spec = get_model_spec("iSSAM")
    model = spec.build(ch=4).eval()
    start_at_composite(model, gate_logit=10.0)  # a = sigmoid(30): the output is the input image
    image, mask = torch.randn(1, 3, 32, 32), (torch.rand(1, 1, 32, 32) > 0.5).float()
    with torch.no_grad():
        output = model(image, mask)["images"]
    assert torch.allclose(output, image, atol=1e-5)
    assert not model.decoder.conv_attention.weight.any()
    with pytest.raises(ValueError, match="no image-fusion gate"):
        start_at_composite(get_model_spec("BargainNet").build(ngf=8), 2.0)


def test_time_bounded_recipe_snapshots_and_decays_per_step(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "data", name="Tiny", size=(48, 40), splits={"train": 8})
    config = tmp_path / "config.yml"
    config.write_text(f"EXPS_PATH: {tmp_path / 'exps'}\n")
    command = [sys.executable, str(REPO / "train.py"), str(REPO / "tests/model_scripts/models/tiny_issam_for_time.py"),
               "--device", "cpu", "--dataset-path", str(dataset), "--config-path", str(config), "--workers", "0",
               "--batch-size", "2", "--threads", "1", "--lr", "0.01", "--max-train-minutes", "0.05"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    (experiment,) = (tmp_path / "exps" / "tiny_issam_for_time").iterdir()
    checkpoints = experiment / "checkpoints"
    snapshots = sorted(checkpoints.glob("t*min.pth"))
    assert snapshots, list(checkpoints.iterdir())  # every 0.3 s over 3 s
    assert all(float(p.stem[1:-3]) <= 0.05 + 1e-9 for p in snapshots)
    assert not list(checkpoints.glob("[0-9][0-9][0-9].pth"))  # no per-epoch NNN.pth in this recipe
    state = load_training_state(checkpoints / "training_state.pth")
    assert state["global_step"] > 4  # several epochs of 4 steps
    # the scheduler was stepped per step and its cosine ended with the time budget: lr near 0.1 x 0.01
    assert state["scheduler"]["_last_lr"][0] == pytest.approx(0.001, rel=0.2)
    # the state holds the training time; a resume counts it, so this finished budget trains no further step
    assert 3.0 <= state["train_seconds"] < 30.0
    written = {path: path.stat().st_mtime_ns for path in snapshots}
    resumed = subprocess.run([*command, "--resume-exp", experiment.name[:3]], capture_output=True, text=True,
                             timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "--max-train-minutes 0.05 reached" in resumed.stderr
    after = load_training_state(checkpoints / "training_state.pth")
    assert after["global_step"] == state["global_step"]
    assert {path: path.stat().st_mtime_ns for path in checkpoints.glob("t*min.pth")} == written  # none rewritten
