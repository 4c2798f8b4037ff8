"""The training engine through its command line: files, exact resume, DDP, stops.

Every run is a real ``train.py`` process on a tiny dataset with a tiny iSSAM
(tests/model_scripts/models/tiny_issam.py), on the CPU.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from iharm.data.hsynth.builder import BuildConfig, build_dataset
from iharm.engine.training_state import load_training_state
from iharm.inference.utils import load_model
from test_hsynth_builder import write_photo_folder
from tiny_data import make_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests/model_scripts/models/tiny_issam.py"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), name="Tiny", size=(48, 40), splits={"train": 8, "test": 2})


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "config.yml"
    path.write_text(f"EXPS_PATH: {tmp_path / 'exps'}\n{extra}")
    return path


def _train(tmp_path: Path, dataset: Path, *extra: str, env: dict[str, str] | None = None,
           launcher: tuple[str, ...] = (), timeout: int = 300, config: str = "",
           script: Path = SCRIPT) -> subprocess.CompletedProcess:
    command = [*(launcher or (sys.executable,)), str(REPO / "train.py"), str(script), "--device", "cpu",
               "--dataset-path", str(dataset), "--config-path", str(_config(tmp_path, config)), "--workers", "0",
               "--batch-size", "2", "--seed", "1", "--threads", "1", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def _experiment(tmp_path: Path, number: str) -> Path:
    (folder,) = (tmp_path / "exps" / "tiny_issam").glob(f"{number}*")
    return folder


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def _assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different[:5]}"


def test_cli_writes_documented_files_and_learns(tmp_path: Path, dataset: Path) -> None:
    result = _train(tmp_path, dataset, "--epochs", "3", "--exp-name", "smoke", "--lr", "3e-3",
                    env={"IHARM_TEST_CH": "32"})
    assert result.returncode == 0, result.stderr[-3000:]
    exp = _experiment(tmp_path, "000")
    assert exp.name == "000_smoke"
    for relative in ("config.yml", "checkpoints/last_checkpoint.pth", "checkpoints/000.pth", "checkpoints/002.pth",
                     "checkpoints/training_state.pth", "vis/train/000000_reconstruction.jpg"):
        assert (exp / relative).is_file(), relative
    assert list(exp.glob("tiny_issam_*.py")), "the model script is copied into the experiment"
    assert list((exp / "logs").glob("events.out.tfevents.*")), "TensorBoard events"
    log = next((exp / "logs").glob("train_*.log")).read_text()
    losses = [float(line.split("train loss: ")[1].split(",")[0]) for line in log.splitlines() if "train loss:" in line]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    throughput = [line for line in log.splitlines() if "throughput: 8 images in" in line]  # 8 images an epoch
    assert len(throughput) == 3 and all("model steps alone" in line for line in throughput), throughput
    assert "validation" in log and "fMSE" in log
    # the weights are a bare state dict in the official format, loadable by load_model
    model = load_model("iSSAM", exp / "checkpoints/last_checkpoint.pth")
    _assert_bitwise_equal(model.state_dict(), _weights(exp / "checkpoints/last_checkpoint.pth"))
    # best_checkpoint.pth: the weights of the epoch with the lowest validation fMSE, as its record says
    best = json.loads((exp / "checkpoints/best_checkpoint.json").read_text())
    kept = [float(line.split("so far (")[1].split(")")[0]) for line in log.splitlines() if "so far (" in line]
    assert kept and kept == sorted(kept, reverse=True) and best["fMSE"] == pytest.approx(kept[-1], abs=0.01)
    _assert_bitwise_equal(_weights(exp / "checkpoints/best_checkpoint.pth"),
                          _weights(exp / f"checkpoints/{best['epoch']:03d}.pth"))
    state = load_training_state(exp / "checkpoints/training_state.pth")
    assert (state["epoch"], state["step"], state["global_step"]) == (3, 0, 12)


def test_sigkill_mid_epoch_then_resume_is_bitwise_exact(tmp_path: Path, dataset: Path) -> None:
    common = ("--epochs", "4", "--deterministic", "--state-every", "1")
    assert _train(tmp_path, dataset, *common, "--exp-name", "straight").returncode == 0
    # 4 steps per epoch: the 11th training step is step 3 of epoch 3 (epoch index 2)
    killed = _train(tmp_path, dataset, *common, "--exp-name", "killed", env={"IHARM_TEST_KILL_AT": "11"})
    assert killed.returncode == -signal.SIGKILL
    interrupted = _experiment(tmp_path, "001")
    state = load_training_state(interrupted / "checkpoints/training_state.pth")
    assert (state["epoch"], state["step"]) == (2, 2)
    resumed = _train(tmp_path, dataset, *common, "--resume-exp", "001")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed exactly" in resumed.stderr
    _assert_bitwise_equal(_weights(_experiment(tmp_path, "000") / "checkpoints/last_checkpoint.pth"),
                          _weights(interrupted / "checkpoints/last_checkpoint.pth"))


def test_on_the_fly_hsynth_resumes_bitwise_exactly_with_loader_workers(tmp_path: Path,
                                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same SIGKILL-and-resume check with a new composite per sample (LiveHSynth), made in 2 workers."""
    root = tmp_path_factory.mktemp("live-pool")
    write_photo_folder(root / "photos")
    test_photos = frozenset({"scikit-motorcycle-left", "scikit-motorcycle-right", "scikit-rocket"})
    build_dataset(root / "photos", root, BuildConfig(per_photo=1, workers=1, test_photos=test_photos))
    common = ("--epochs", "3", "--deterministic", "--state-every", "1", "--workers", "2")
    env = {"IHARM_TEST_LIVE_SIZE": "48"}
    config = f"PHOTOS_PATH: {root / 'photos'}\n"
    assert _train(tmp_path, root / "HSynth", *common, "--exp-name", "straight", env=env,
                  config=config).returncode == 0
    # 5 training photos x 4 samples, batch 2: 10 steps an epoch; the 14th is step 4 of epoch 2
    killed = _train(tmp_path, root / "HSynth", *common, "--exp-name", "killed", config=config,
                    env={**env, "IHARM_TEST_KILL_AT": "14"})
    assert killed.returncode == -signal.SIGKILL
    resumed = _train(tmp_path, root / "HSynth", *common, "--resume-exp", "001", env=env, config=config)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed exactly" in resumed.stderr
    _assert_bitwise_equal(_weights(_experiment(tmp_path, "000") / "checkpoints/last_checkpoint.pth"),
                          _weights(_experiment(tmp_path, "001") / "checkpoints/last_checkpoint.pth"))


def test_ddp_two_gloo_processes_match_one_process(tmp_path: Path, dataset: Path) -> None:
    env = {"IHARM_TEST_NO_BN": "1"}
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    single_dir.mkdir()
    ddp_dir.mkdir()
    args = ("--epochs", "2", "--batch-size", "4")
    single = _train(tmp_path / "single", dataset, *args,
                    env={**env, "IHARM_TEST_LOSS_LOG": str(single_dir / "loss.txt"), "IHARM_TEST_DUMP_DIR": str(single_dir)})
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    ddp = _train(tmp_path / "ddp", dataset, *args, launcher=torchrun,
                 env={**env, "IHARM_TEST_LOSS_LOG": str(ddp_dir / "loss.txt"), "IHARM_TEST_DUMP_DIR": str(ddp_dir)})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # every rank holds the same weights
    _assert_bitwise_equal(_weights(ddp_dir / "rank0.pth"), _weights(ddp_dir / "rank1.pth"))
    # the global loss (mean of the two half-batch losses) follows the single-process run
    single_losses = [float(line.split()[1]) for line in (single_dir / "loss.txt").read_text().split("\n") if line]
    per_rank: dict[str, list[float]] = {"0": [], "1": []}
    for line in (ddp_dir / "loss.txt").read_text().split("\n"):
        if line:
            rank, value = line.split()
            per_rank[rank].append(float(value))
    ddp_losses = [(a + b) / 2 for a, b in zip(per_rank["0"], per_rank["1"])]
    assert len(single_losses) == len(ddp_losses) == 4  # 8 images, batch 4, 2 epochs
    assert ddp_losses == pytest.approx(single_losses, rel=1e-4)
    final_single, final_ddp = _weights(single_dir / "rank0.pth"), _weights(ddp_dir / "rank0.pth")
    for key in final_single:
        torch.testing.assert_close(final_ddp[key], final_single[key], rtol=1e-3, atol=1e-5)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, dataset: Path) -> None:
    # the 6th training step is step 2 of the second epoch
    result = _train(tmp_path, dataset, "--epochs", "2", env={"IHARM_TEST_NAN_AT": "6"})
    assert result.returncode == 3
    assert "non-finite loss (nan) at epoch 1, step 1" in result.stderr
    exp = _experiment(tmp_path, "000")
    state = load_training_state(exp / "checkpoints/training_state.pth")
    assert (state["epoch"], state["step"]) == (1, 0)  # written after epoch 0, nothing after
    weights = _weights(exp / "checkpoints/last_checkpoint.pth")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    _assert_bitwise_equal(weights, state["model"])


def _start_long_run(tmp_path: Path, dataset: Path, step_sleep: float = 0.0) -> tuple[subprocess.Popen, Path]:
    """A training run that would go on for a long time, once its first step is done; with
    ``step_sleep`` each step takes that much longer (signals sent 0.3 s apart arrive in one step)."""
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), str(SCRIPT), "--device", "cpu", "--dataset-path", str(dataset),
         "--config-path", str(_config(tmp_path)), "--workers", "0", "--batch-size", "2", "--epochs", "1000",
         "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "IHARM_TEST_STEP_SLEEP": str(step_sleep)})
    exps = tmp_path / "exps" / "tiny_issam"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(exps.glob("000*/vis/train/*.jpg")):
        time.sleep(0.2)
    time.sleep(step_sleep / 4)  # inside the next step's sleep
    return process, exps


def test_sigterm_saves_a_resumable_state(tmp_path: Path, dataset: Path) -> None:
    process, exps = _start_long_run(tmp_path, dataset)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr and "resume with: --resume-exp 000" in stderr
    state = load_training_state(next(exps.glob("000*")) / "checkpoints/training_state.pth")
    assert state["global_step"] >= 1


def test_bad_input_is_reported_before_training(tmp_path: Path, dataset: Path) -> None:
    result = _train(tmp_path, tmp_path / "missing_dataset")
    assert result.returncode == 2 and "missing_dataset: dataset folder not found" in result.stderr
    result = _train(tmp_path, dataset, "--weights", str(tmp_path / "nope.pth"))
    assert result.returncode == 2 and "nope.pth: checkpoint file not found" in result.stderr


def test_bargainnet_trains_through_the_same_engine(tmp_path: Path, dataset: Path) -> None:
    config = _config(tmp_path)
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), str(REPO / "tests/model_scripts/models/tiny_bargainnet.py"),
         "--device", "cpu", "--dataset-path", str(dataset), "--config-path", str(config), "--workers", "0",
         "--batch-size", "2", "--epochs", "3", "--lr", "1e-3", "--threads", "1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    exp = next((tmp_path / "exps" / "tiny_bargainnet").glob("000*"))
    log = next((exp / "logs").glob("train_*.log")).read_text()
    val_losses = [float(line.split("validation loss: ")[1]) for line in log.splitlines() if "validation loss:" in line]
    assert len(val_losses) == 3 and val_losses[-1] < val_losses[0], val_losses
    # our checkpoint format (netG.* + netE.*) loads back through the registry, width from the file
    model = load_model("BargainNet", exp / "checkpoints/last_checkpoint.pth")
    assert model.netG.model.model[0].weight.shape[0] == 8


def test_sigterm_after_ctrl_c_still_saves_and_resumes(tmp_path: Path, dataset: Path) -> None:
    """A scheduler's SIGTERM 0.3 s after the user's Ctrl-C must not throw the pending save away."""
    process, exps = _start_long_run(tmp_path, dataset, step_sleep=2)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, stderr[-2000:]
    assert "Traceback" not in stderr and "received SIGTERM while stopping" in stderr
    checkpoints = next(exps.glob("000*")) / "checkpoints"
    assert (checkpoints / "training_state.pth").is_file() and (checkpoints / "last_checkpoint.pth").is_file()
    resumed = _train(tmp_path, dataset, "--resume-exp", "000", "--max-steps", "1000000", "--epochs",
                     str(load_training_state(checkpoints / "training_state.pth")["epoch"] + 1))
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_ctrl_c_twice_aborts_in_one_line(tmp_path: Path, dataset: Path) -> None:
    process, _ = _start_long_run(tmp_path, dataset, step_sleep=2)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "aborted by a second Ctrl-C: the steps since the last save are lost" in stderr


def test_compiled_training_follows_the_eager_run(tmp_path: Path, dataset: Path) -> None:
    """--compile (issue 14, item 3): no Inductor error, no graph break (one full graph), and the step
    losses and final weights of the eager run within float32 rounding."""
    runs = {}
    for name, extra in (("eager", ()), ("compiled", ("--compile",))):
        folder = tmp_path / name
        folder.mkdir()
        result = _train(folder, dataset, "--epochs", "1", *extra, timeout=600,
                        env={"IHARM_TEST_NO_BN": "1", "IHARM_TEST_LOSS_LOG": str(folder / "loss.txt"),
                             "IHARM_TEST_DUMP_DIR": str(folder)})
        assert result.returncode == 0, result.stderr[-3000:]
        assert ("under torch.compile" in result.stderr) == bool(extra)
        losses = [float(line.split()[1]) for line in (folder / "loss.txt").read_text().split("\n") if line]
        runs[name] = losses, _weights(folder / "rank0.pth")
    (eager_losses, eager_weights), (compiled_losses, compiled_weights) = runs["eager"], runs["compiled"]
    assert len(eager_losses) == 4 and compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    for key in eager_weights:
        torch.testing.assert_close(compiled_weights[key], eager_weights[key], rtol=1e-3, atol=1e-5)
