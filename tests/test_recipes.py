"""The official recipes are data: their values are the papers' (as ../shared/reference/*_spec.md
states them), they reach the trainer unchanged, and ``train.py --set`` overrides them.

The wiring test replaces the trainer and the datasets with recorders, so it checks what
``train_recipe`` hands on without training; one real run of ``models/DucoNet_256.py``, its
datasets, crop and epochs all set from the command line, shows the overrides end to end.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from easydict import EasyDict

from iharm.engine import recipe as recipe_module
from iharm.engine.options import TrainOptions
from iharm.engine.recipe import with_overrides
from iharm.utils.config import ConfigError
from test_train import REPO, _config
from tiny_data import make_dataset

IHARMONY4 = ("HFLICKR_PATH", "HDAY2NIGHT_PATH", "HCOCO_PATH", "HADOBE5K_PATH")
VALIDATION = ("HFLICKR_PATH", "HDAY2NIGHT_PATH", "HCOCO_PATH")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO / "models" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# (script, batch size, train keys, crop, epochs, milestones, learning rate at that batch): the specs' numbers
PAPER = {
    "DucoNet_256": (64, IHARMONY4, 256, 120, (105, 115), 1e-3),
    "DucoNet_1024": (4, ("HADOBE5K1_PATH",), 1024, 120, (105, 115), 2.5e-4),  # "lr = 2.5e-4" at batch 4
    "iSSAM_256": (16, IHARMONY4, 256, 120, (105, 115), 5e-4),
    "BargainNet_256": (1, ("IHD_PATH",), 256, 200, (), 1e-4),  # constant, any batch
}


class _Recorder:
    """Stands in for SimpleHTrainer: keeps what it was built with and the epoch count it ran."""

    built: dict = {}

    def __init__(self, model, cfg, model_cfg, loss_cfg, trainset, valset, **kwargs) -> None:
        _Recorder.built = {"trainset": trainset, "valset": valset, **kwargs}

    def run(self, num_epochs: int) -> None:
        _Recorder.built["num_epochs"] = num_epochs


@pytest.fixture
def recording(monkeypatch):
    """Trainer and datasets replaced by recorders; ``_Recorder.built`` holds what the last run got."""
    monkeypatch.setattr(recipe_module, "SimpleHTrainer", _Recorder)
    monkeypatch.setattr(recipe_module, "recipe_dataset", lambda cfg, keys, split, **kw: (split, tuple(keys), kw))
    monkeypatch.setattr(recipe_module, "_training_set",
                        lambda cfg, model_cfg, keys, live, **kw: ("train", tuple(keys), kw))


def _script_without_network(name: str, monkeypatch):
    """The recipe script with a stand-in network (the wiring, not the model, is under test)."""
    script = _script(name)
    monkeypatch.setattr(script, "init_model", lambda cfg, recipe: (torch.nn.Linear(1, 1), EasyDict(
        crop_size=(recipe.crop_size,) * 2, spec=EasyDict(needs_lab=False))))
    return script


@pytest.mark.parametrize("name", sorted(PAPER))
def test_official_recipes_hand_the_papers_values_to_the_trainer(name, recording, monkeypatch):
    batch, train_keys, crop, epochs, milestones, lr = PAPER[name]
    script = _script_without_network(name, monkeypatch)
    script.main(EasyDict(batch_size=batch, options=TrainOptions(batch_size=batch)))
    built = _Recorder.built
    assert built["trainset"][:2] == ("train", train_keys)
    assert built["valset"][1] == (VALIDATION if name != "DucoNet_1024" else ("HADOBE5K1_PATH",))
    assert built["num_epochs"] == epochs
    assert built["optimizer"] == "adam" and built["optimizer_params"]["lr"] == pytest.approx(lr, rel=1e-12)
    scheduler = built["lr_scheduler"](torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0))
    assert list(scheduler.milestones) == list(milestones) and scheduler.gamma == 0.1
    assert script.RECIPE.crop_size == crop


def test_lr_and_set_change_what_the_trainer_gets(recording, monkeypatch):
    script = _script_without_network("DucoNet_256", monkeypatch)
    options = TrainOptions(batch_size=16, lr=4e-3,
                           recipe_set=("num_epochs=3", "lr_milestones=[2]", 'train_keys=["HSYNTH_PATH"]'))
    script.main(EasyDict(batch_size=16, options=options))
    built = _Recorder.built
    assert built["num_epochs"] == 3 and built["trainset"][1] == ("HSYNTH_PATH",)
    assert built["optimizer_params"]["lr"] == pytest.approx(4e-3 * 0.5)  # --lr, still x sqrt(16 / 64)
    scheduler = built["lr_scheduler"](torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0))
    assert list(scheduler.milestones) == [2]


@pytest.mark.parametrize("assignment, message", [
    ("train_keys=[1, 2]", "train_keys takes a value like ('HFLICKR_PATH'"),
    ("lr_milestones=[a]", "lr_milestones takes a value like (105, 115)"),
    ("lr_batch_reference=null", None),
    ("num_epochs=2.5", "num_epochs takes a value like 120, got float"),
])
def test_epoch_recipe_overrides_are_typed(assignment, message):
    recipe = _script("DucoNet_256").RECIPE
    if message is None:
        assert with_overrides(recipe, [assignment]) == replace(recipe, lr_batch_reference=None)
    else:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            with_overrides(recipe, [assignment])


def test_set_trains_an_official_recipe_end_to_end(tmp_path, reference_dir):
    """models/DucoNet_256.py on a tiny dataset (--dataset-path), its crop, epochs and checkpoints set by --set."""
    dataset = make_dataset(tmp_path / "data", name="Tiny", size=(48, 40), splits={"train": 4, "test": 2})
    sets = ["crop_size=32", "num_epochs=2",
            "checkpoint_interval=1", "image_dump_interval=0"]
    command = [sys.executable, str(REPO / "train.py"), str(REPO / "models/DucoNet_256.py"), "--device", "cpu",
               "--dataset-path", str(dataset), "--config-path", str(_config(tmp_path)), "--workers", "0",
               "--batch-size", "2", "--threads", "1", "--exp-name", "set",
               *[arg for s in sets for arg in ("--set", s)]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (exp,) = (tmp_path / "exps").glob("**/000_set")
    saved = sorted(p.name for p in (exp / "checkpoints").glob("[0-9][0-9][0-9].pth"))
    assert saved == ["000.pth", "001.pth"]  # two epochs, one checkpoint each (the recipe says 120 and 10)
    weights = torch.load(exp / "checkpoints" / "last_checkpoint.pth", weights_only=True)
    official = json.loads((reference_dir / "duconet256_keys.json").read_text())["state_dict"]
    assert sorted(weights) == sorted(name for name, _, _ in official)  # the whole DucoNet, official names
