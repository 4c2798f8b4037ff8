"""What only a GPU can show (issue 19): run by ``scripts/gpu_check.sh`` on a CUDA machine, skipped elsewhere.

The CPU results are the references: the CPU float32 paths are checked against the
official vectors by the rest of the suite.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iharm.engine.training_state import load_training_state
from iharm.inference.predictor import Predictor, build_predictor
from iharm.model.registry import get_model_spec
from test_train import REPO, _experiment, _train
from tiny_data import make_dataset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (scripts/gpu_check.sh)")

SHIPPED = REPO / "checkpoints/hsynth/DucoNet_hsynth.pth"
#: The fast-path exactness bound on the 0..255 scale (tests/test_predictor.py: 1e-5 in normalised units).
ATOL_255 = 1e-3
TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), name="Tiny", size=(48, 40), splits={"train": 8, "test": 2})


def _inputs(size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=generator)
    labs = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=generator)
    masks = torch.zeros(2, 1, size, size)
    masks[..., size // 4:3 * size // 4, size // 5:size // 2] = 1
    return images, masks, labs


def test_float32_prediction_on_cuda_matches_the_cpu_within_the_exactness_bound():
    """TF32 is off in 'float32' (item 8): with it, cuDNN's convolutions would miss this bound."""
    cpu = build_predictor("DucoNet", SHIPPED, "cpu").predict_batch(*_inputs())
    gpu = build_predictor("DucoNet", SHIPPED, "cuda").predict_batch(*_inputs()).cpu()
    assert (gpu - cpu).abs().max() <= ATOL_255


def test_bargainnet_fp16_prediction_is_finite():
    """The partial convolution's ratio in float32 (item 2): in fp16 it was 9/0 * 0 = NaN."""
    torch.manual_seed(0)
    spec = get_model_spec("BargainNet")
    images, masks, _ = _inputs()
    out = Predictor(spec.build(), spec, "cuda", precision="fp16").predict_batch(images, masks)
    assert torch.isfinite(out).all()


def test_deterministic_training_runs_on_cuda(tmp_path: Path, dataset: Path):
    """--deterministic is warn_only on CUDA (item 1): bilinear upsampling has no deterministic backward."""
    done = _train(tmp_path, dataset, "--device", "cuda", "--deterministic", "--max-steps", "3")
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_checkpoint_written_on_cuda_loads_on_a_machine_without_one(tmp_path: Path, dataset: Path):
    """Weights and states are saved as CPU tensors (item 12): torch.load without map_location works."""
    done = _train(tmp_path, dataset, "--device", "cuda", "--gpus", "0", "--max-steps", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoints = _experiment(tmp_path, "000") / "checkpoints"
    code = ("import sys, torch; [torch.load(p, weights_only=True) for p in sys.argv[1:]]; "
            "assert not torch.cuda.is_available()")
    loaded = subprocess.run([sys.executable, "-c", code, str(checkpoints / "last_checkpoint.pth"),
                             str(checkpoints / "training_state.pth")], capture_output=True, text=True,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert loaded.returncode == 0, loaded.stderr[-2000:]


def test_a_torchrun_nccl_run_saves_this_gpus_random_state_and_resumes(tmp_path: Path, dataset: Path):
    """One NCCL process under torchrun (issue 14 item 5); its state holds its own device's CUDA RNG state
    (item 4), and it resumes. (Bitwise equality is not expected on CUDA: upsampling's backward is not
    deterministic there.)"""
    common = ("--device", "cuda", "--epochs", "2", "--state-every", "1")
    env = {"IHARM_TEST_NOISE": "1"}
    killed = _train(tmp_path, dataset, *common, launcher=TORCHRUN, env={**env, "IHARM_TEST_KILL_AT": "5"})
    assert killed.returncode != 0
    state = load_training_state(_experiment(tmp_path, "000") / "checkpoints/training_state.pth")
    assert state["global_step"] == 4 and len(state["rng_per_rank"]) == 1
    assert len(state["rng_per_rank"][0]["cuda"]) == 1
    resumed = _train(tmp_path, dataset, *common, "--resume-exp", "000", launcher=TORCHRUN, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed exactly" in resumed.stderr and "not bitwise exact" not in resumed.stderr
