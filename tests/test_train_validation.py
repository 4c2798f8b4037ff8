"""train.py refuses user errors with one line and exit 2, before anything is created.

Each case names the flag in a single ``error:`` line; the experiments folder stays
empty, so that the next run's number does not move up.
"""
from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from iharm.engine.recipe import TimeRecipe, with_overrides
from test_train import REPO, SCRIPT, _config, _train
from tiny_data import make_dataset


def _train_module():
    spec = importlib.util.spec_from_file_location("train_under_test", REPO / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = _train_module()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), name="Tiny", size=(48, 40), splits={"train": 4, "test": 2})


CASES = {
    "lr nan": (["--lr", "nan"], "--lr nan: must be a finite number > 0"),
    "lr negative": (["--lr", "-0.1"], "--lr -0.1: must be a finite number > 0"),
    "batch 0": (["--batch-size", "0"], "--batch-size 0: must be >= 1"),
    "batch -3": (["--batch-size", "-3"], "--batch-size -3: must be >= 1"),
    "workers -1": (["--workers", "-1"], "--workers -1: must be >= 0"),
    "epochs 0": (["--epochs", "0"], "--epochs 0: must be >= 1"),
    "minutes inf": (["--max-train-minutes", "inf"], "--max-train-minutes inf: must be a finite number"),
}
if not torch.cuda.is_available():
    CASES |= {
        "device cuda": (["--device", "cuda"], "--device cuda: CUDA is not available"),
        "gpus": (["--device", "auto", "--gpus=0,1"], "--gpus 0,1: CUDA is not available"),
        "ngpus": (["--device", "auto", "--ngpus", "2"], "--ngpus 2: CUDA is not available"),
        "amp fp16": (["--amp", "fp16"], "--amp fp16: fp16 autocast needs CUDA"),
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_flags_are_one_line_and_exit_2(case, dataset, tmp_path, capsys):
    extra, message = CASES[case]
    argv = [str(SCRIPT), "--device", "cpu", "--dataset-path", str(dataset), "--config-path",
            str(_config(tmp_path)), "--workers", "0", "--batch-size", "2", *extra]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and message in err, err
    assert not (tmp_path / "exps").exists()


TIME_SCRIPT = REPO / "tests/model_scripts/models/tiny_issam_for_time.py"
SET_CASES = {
    "no recipe": (SCRIPT, "work_size=8", "tiny_issam.py declares no RECIPE to override"),
    "unknown name": (TIME_SCRIPT, "size=8", "--set size=8: expected NAME=VALUE with NAME one of live_size, work_size"),
    "no value": (TIME_SCRIPT, "work_size", "--set work_size: expected NAME=VALUE"),
    "wrong kind": (TIME_SCRIPT, "work_size=1.5", "--set work_size=1.5: work_size takes a value like 32, got float"),
    "not nullable": (TIME_SCRIPT, "work_size=null", "--set work_size=null: work_size takes a value like 32"),
}


@pytest.mark.parametrize("case", sorted(SET_CASES))
def test_bad_recipe_overrides_are_refused_before_anything_starts(case, dataset, tmp_path, capsys):
    script, assignment, message = SET_CASES[case]
    argv = [str(script), "--device", "cpu", "--dataset-path", str(dataset), "--config-path", str(_config(tmp_path)),
            "--workers", "0", "--max-train-minutes", "1", "--set", assignment]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and message in err, err
    assert not (tmp_path / "exps").exists()


def test_recipe_overrides_are_typed_values():
    recipe = TimeRecipe()
    changed = with_overrides(recipe, ["work_size=128", "crop_scale=[0.25, 1]", "gate_logit=null", "peak_lr=1",
                                      "live_size=null"])
    assert changed == replace(recipe, work_size=128, crop_scale=(0.25, 1), gate_logit=None, peak_lr=1.0,
                              live_size=None)
    assert isinstance(changed.peak_lr, float) and with_overrides(recipe, []) == recipe


def test_a_model_script_with_a_syntax_error(tmp_path, capsys):
    script = tmp_path / "models" / "broken.py"
    script.parent.mkdir()
    script.write_text("def init_model(cfg):\n    return (\n")
    assert train.main([str(script), "--device", "cpu", "--config-path", str(_config(tmp_path))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {script}:") and "syntax error in the model script" in err
    assert err.splitlines() == [err] and not (tmp_path / "exps").exists()


def test_failed_checks_inside_the_run_leave_no_experiment_folder(dataset, tmp_path):
    """A batch larger than the training set is found by the engine, after the folder was made:
    the folder goes again, and the next run gets number 000."""
    done = _train(tmp_path, dataset, "--batch-size", "64", "--max-steps", "1")
    assert done.returncode == 2, done.stderr
    assert "removed the new experiment folder" in done.stderr
    assert list((tmp_path / "exps" / "tiny_issam").iterdir()) == []


def test_resuming_an_experiment_without_checkpoints_is_a_clean_error(dataset, tmp_path):
    (tmp_path / "exps" / "tiny_issam" / "000_empty" / "checkpoints").mkdir(parents=True)
    done = _train(tmp_path, dataset, "--resume-exp", "000")
    assert done.returncode == 2 and "holds no checkpoint to resume from" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "exps" / "tiny_issam" / "000_empty").is_dir()  # the user's folder is kept
