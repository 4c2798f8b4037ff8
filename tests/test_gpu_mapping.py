"""Which GPU each training process uses, with a mocked CUDA (no GPU needed).

``--gpus`` counts the GPUs this process sees. A scheduler's
``CUDA_VISIBLE_DEVICES`` (here ``4,5``: two GPUs, torch indices 0 and 1) is
respected and never rewritten, and each process selects its device with
``torch.cuda.set_device`` (issue 19, item 3).
"""
from __future__ import annotations

import os

import pytest
import torch

import iharm.commands.train as train
from iharm.engine import distributed
from test_train import SCRIPT


@pytest.fixture
def two_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> list[torch.device]:
    """CUDA with two visible GPUs under ``CUDA_VISIBLE_DEVICES=4,5``; returns the set_device calls."""
    selected: list[torch.device] = []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: selected.append(torch.device(device)))
    return selected


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, str]]:
    """Stands in for the worker and the spawner: records (processes, --gpus, CUDA_VISIBLE_DEVICES)."""
    calls: list[tuple[int, str, str]] = []
    monkeypatch.setattr(train, "run_worker",
                        lambda args: calls.append((1, args.gpus, os.environ["CUDA_VISIBLE_DEVICES"])) or 0)
    monkeypatch.setattr(train, "spawn", lambda world, fn, args: calls.append(
        (world, args.gpus, os.environ["CUDA_VISIBLE_DEVICES"])))
    return calls


def test_one_gpu_by_index_selects_that_device_and_keeps_the_variable(two_visible_gpus, launches):
    assert train.main([str(SCRIPT), "--gpus", "1"]) == 0
    assert launches == [(1, "1", "4,5")]
    args = train.parse_args([str(SCRIPT), "--gpus", "1"])
    info = distributed.init_distributed("cuda", cuda_index=train._cuda_index(args, 0))
    assert info.device == torch.device("cuda", 1) and two_visible_gpus == [torch.device("cuda", 1)]


def test_several_gpus_spawn_one_process_each_on_its_own_index(two_visible_gpus, launches):
    assert train.main([str(SCRIPT), "--gpus", "1,0"]) == 0
    assert launches == [(2, "1,0", "4,5")]
    args = train.parse_args([str(SCRIPT), "--gpus", "1,0"])
    assert [train._cuda_index(args, rank) for rank in (0, 1)] == [1, 0]


def test_ngpus_means_the_first_visible_gpus(two_visible_gpus, launches):
    assert train.main([str(SCRIPT), "--ngpus", "2"]) == 0
    assert launches == [(2, "0,1", "4,5")]


def test_torchrun_without_gpus_uses_the_local_rank(two_visible_gpus):
    args = train.parse_args([str(SCRIPT)])
    assert train._cuda_index(args, 1) == 1


@pytest.mark.parametrize("flags, message", [
    (["--gpus", "2"], "--gpus 2: this process sees 2 GPUs (indices 0-1 of CUDA_VISIBLE_DEVICES=4,5)"),
    (["--gpus", "0,0"], "--gpus 0,0: must be distinct GPU indices"),
    (["--gpus", "a"], "--gpus a: must be distinct GPU indices"),
    (["--ngpus", "3"], "--ngpus 3: this process sees 2 GPUs"),
])
def test_gpus_that_are_not_visible_are_refused_in_one_line(two_visible_gpus, launches, capsys, flags, message):
    assert train.main([str(SCRIPT), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and message in err, err
    assert launches == [] and two_visible_gpus == []
