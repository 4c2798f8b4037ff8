"""What several training processes guarantee, with real 2-rank gloo runs (``torchrun --nproc_per_node 2``).

* Exact resume per rank: each rank saves and restores its own RNG streams, so a
  run killed and resumed ends bitwise where an uninterrupted one does, also when
  training draws random numbers (here noise added in the loss, as dropout would).
* Identical replicas under a time-based schedule: the learning rate and the time
  limit follow rank 0's clock, so a rank whose clock runs 3x fast applies the same
  steps; BatchNorm statistics are averaged over the ranks before validation and
  saving, so every rank holds exactly the weights rank 0 saves.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from iharm.engine.training_state import load_training_state
from test_train import REPO, _assert_bitwise_equal, _experiment, _train, _weights
from tiny_data import make_dataset

TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
TIME_SCRIPT = REPO / "tests/model_scripts/models/tiny_issam_for_time.py"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), name="Tiny", size=(48, 40), splits={"train": 8, "test": 2})


def test_two_ranks_killed_and_resumed_end_bitwise_like_an_uninterrupted_run(tmp_path: Path, dataset: Path) -> None:
    common = ("--epochs", "3", "--batch-size", "4", "--deterministic", "--state-every", "1")
    env = {"IHARM_TEST_NOISE": "1"}
    straight = _train(tmp_path, dataset, *common, "--exp-name", "straight", launcher=TORCHRUN, env=env)
    assert straight.returncode == 0, straight.stderr[-3000:]
    state = load_training_state(_experiment(tmp_path, "000") / "checkpoints/training_state.pth")
    ranks = state["rng_per_rank"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"]), "each rank its own stream"
    # 2 steps an epoch (8 images, 4 per step over 2 ranks); every rank dies in the loss of its 4th step
    killed = _train(tmp_path, dataset, *common, "--exp-name", "killed", launcher=TORCHRUN,
                    env={**env, "IHARM_TEST_KILL_AT": "4"})
    assert killed.returncode != 0
    interrupted = _experiment(tmp_path, "001")
    state = load_training_state(interrupted / "checkpoints/training_state.pth")
    assert (state["epoch"], state["step"], state["global_step"]) == (1, 1, 3)
    resumed = _train(tmp_path, dataset, *common, "--resume-exp", "001", launcher=TORCHRUN, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed exactly" in resumed.stderr and "not bitwise exact" not in resumed.stderr
    _assert_bitwise_equal(_weights(_experiment(tmp_path, "000") / "checkpoints/last_checkpoint.pth"),
                          _weights(interrupted / "checkpoints/last_checkpoint.pth"))


def test_a_rank_with_a_fast_clock_keeps_the_replicas_identical(tmp_path: Path, dataset: Path) -> None:
    dump = tmp_path / "dump"
    dump.mkdir()
    result = _train(tmp_path, dataset, "--batch-size", "4", "--lr", "0.01", "--max-train-minutes", "0.05",
                    launcher=TORCHRUN, script=TIME_SCRIPT,
                    env={"IHARM_TEST_CLOCK_SKEW": "1:3", "IHARM_TEST_DUMP_DIR": str(dump)})
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = _weights(dump / "rank0.pth"), _weights(dump / "rank1.pth")
    assert any("running_mean" in key for key in rank0), "the tiny iSSAM has BatchNorm"
    _assert_bitwise_equal(rank0, rank1)  # parameters and BatchNorm statistics
    (experiment,) = (tmp_path / "exps" / "tiny_issam_for_time").iterdir()
    _assert_bitwise_equal(rank0, _weights(experiment / "checkpoints/last_checkpoint.pth"))
    state = load_training_state(experiment / "checkpoints/training_state.pth")
    # the run lasted rank 0's 3 s (rank 1's clock would have stopped it after 1 s), and its cosine ended there
    assert state["train_seconds"] >= 3.0
    assert state["scheduler"]["_last_lr"][0] == pytest.approx(0.001, rel=0.2)
