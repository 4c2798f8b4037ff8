"""The worked example of docs/architecture.md: a model added in one file (network + registry entry +
recipe, tests/model_scripts/models/gain_net.py) trains with train.py and evaluates with evaluate_model.py
by its name, end to end, and learns: its test fMSE falls far below the composite's."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from iharm.commands import evaluate
from iharm.model import registry
from iharm.model.registry import create_model
from tiny_data import make_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests/model_scripts/models/gain_net.py"


@pytest.fixture
def gain_net():
    """Import the model file as train.py does (registering GainNet here too); unregister afterwards."""
    spec = importlib.util.spec_from_file_location("gain_net", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    registry._REGISTRY.pop("GainNet")


def test_a_model_in_one_file_trains_and_evaluates_by_name(tmp_path: Path, gain_net) -> None:
    dataset = make_dataset(tmp_path, name="Tiny", size=(48, 40), splits={"train": 8, "test": 4})
    config = tmp_path / "config.yml"
    config.write_text(f"EXPS_PATH: {tmp_path / 'exps'}\n")
    result = subprocess.run([sys.executable, str(REPO / "train.py"), str(SCRIPT), "--device", "cpu",
                             "--dataset-path", str(dataset), "--config-path", str(config), "--workers", "0",
                             "--batch-size", "2", "--seed", "0", "--threads", "1", "--exp-name", "gain"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (checkpoint,) = (tmp_path / "exps").rglob("last_checkpoint.pth")
    assert type(create_model("GainNet", checkpoint)).__name__ == "GainNet"

    scores = {}
    for model in ("Composite", "GainNet"):
        out = tmp_path / model
        argv = [model, *([str(checkpoint)] if model == "GainNet" else []), "--dataset-path", str(dataset),
                "--gpu", "cpu", "--workers", "0", "--config-path", str(config), "--results-path", str(out)]
        assert evaluate.main(argv) == 0
        scores[model] = json.loads((out / "summary.json").read_text())["overall"]["fMSE"]
    # The composite's foreground is the real one with gains (1.2, 0.85, 0.9): a learnt per-channel
    # gain undoes most of it. Untrained (the identity) GainNet would score exactly the composite.
    assert scores["GainNet"] < 0.3 * scores["Composite"], scores
