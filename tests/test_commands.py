"""The installed commands (``pip install .`` entry points) run the same code as the official scripts:
the same output files and printouts, the same exit status for bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_predict_for_dir import checkpoint  # noqa: F401 (the seeded iSSAM weights fixture)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IMAGE, MASK = "composites_no_gt/bargainnet_example_1.png", "composites_no_gt/bargainnet_example_1_mask.png"
COMMANDS = {"iharm-harmonize": "scripts/predict_for_dir.py", "iharm-evaluate": "scripts/evaluate_model.py",
            "iharm-train": "train.py", "iharm-score": "scripts/predict_harmony_score.py",
            "iharm-serve": "scripts/serve.py", "iharm-export": "scripts/export_onnx.py"}


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_is_installed_and_refuses_bad_input_as_its_script(command: str, tmp_path: Path) -> None:
    """The same usage error (status 2, one line naming the argument) from the command and the script."""
    installed = _run([str(BIN / command), "--no-such-flag"], tmp_path)
    script = _run([sys.executable, str(REPO / COMMANDS[command]), "--no-such-flag"], tmp_path)
    assert installed.returncode == script.returncode == 2
    error = installed.stderr.strip().splitlines()[-1]
    assert error.startswith(f"{command}: error: ")
    assert error.split(": error: ")[1] == script.stderr.strip().splitlines()[-1].split(": error: ")[1]


def test_iharm_harmonize_writes_the_bytes_predict_for_dir_writes(shared_data: Path, checkpoint: Path,  # noqa: F811
                                                                  tmp_path: Path) -> None:
    outputs = []
    for name, program in (("installed", [str(BIN / "iharm-harmonize")]),
                          ("script", [sys.executable, str(REPO / "scripts/predict_for_dir.py")])):
        output = tmp_path / f"{name}.png"
        done = _run([*program, "iSSAM", str(checkpoint), "--gpu", "cpu", "--image", str(shared_data / IMAGE),
                     "--mask", str(shared_data / MASK), "--output", str(output)], tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(output.read_bytes())
    assert outputs[0] == outputs[1]


def test_iharm_score_prints_the_official_example_score(shared_data: Path, reference_dir: Path,
                                                       tmp_path: Path) -> None:
    encoder = tmp_path / "latest_net_E.pth"
    torch.save(torch.load(reference_dir / "bargainnet_vector.pt", weights_only=True)["state_dict_E"], encoder)
    done = _run([str(BIN / "iharm-score"), "--checkpoint", str(encoder), "--image", str(shared_data / IMAGE),
                 "--mask", str(shared_data / MASK)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "is 0.98 (inharmony level 0.4304)" in done.stdout  # the official script printed 0.98


def test_iharm_serve_names_a_bad_port(tmp_path: Path) -> None:
    done = _run([str(BIN / "iharm-serve"), "--port", "70000"], tmp_path)
    assert done.returncode == 2 and "--port 70000: expected 1..65535" in done.stderr
