"""What every stage of the quality benchmark shares: the runs, the output folder, small helpers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from iharm.engine.training_state import STATE_FILE
from iharm.utils.metrics import METRIC_NAMES

#: The repository: the benchmark runs its train.py and scripts/ (a tool of a checkout, not of an installed package).
REPO = Path(__file__).resolve().parents[3]


PYTHON = sys.executable
STAGES = ("data", "ablate", "train", "evaluate", "report", "ship")
MODELS = ("DucoNet", "iSSAM", "BargainNet")
#: How HSynth is built (the README's dataset): seed, composites per photo, share of photos in test.
HSYNTH_BUILD = {"seed": 0, "per_photo": 4, "test_fraction": 0.2}
WORK_COPY_SIZE = 256
EVAL_STRATEGY = "Fixed256"
#: A final model is shipped when its HSynth-test fMSE is at most this times the Composite row's.
SHIP_MAX_FMSE_RATIO = 0.8
RATIO = "fMSE / Composite"
COLUMNS = ("N", *METRIC_NAMES, RATIO)
LOAD_SAMPLE_SECONDS = 15.0


@dataclass(frozen=True)
class Run:
    """One training run: a recipe (``models/hsynth/*.py``), optionally with values of its RECIPE overridden
    (``train.py --set``)."""

    name: str
    model: str
    recipe: str
    batch_size: int
    lr: float
    held_out: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def live(self) -> bool:
        """Trained on on-the-fly HSynth (the recipes' live_size), not on a fixed working copy."""
        return self.overrides.get("live_size", True) is not None

    @property
    def composite_output(self) -> bool:
        """BargainNet regenerates the whole image; it is scored composited with the mask (``--composite-output``)."""
        return self.model == "BargainNet"


FINAL_RUNS = (
    Run("iSSAM", "iSSAM", "models/hsynth/iSSAM_hsynth.py", batch_size=16, lr=3e-3),
    Run("DucoNet", "DucoNet", "models/hsynth/DucoNet_hsynth.py", batch_size=16, lr=3e-3),
    Run("BargainNet", "BargainNet", "models/hsynth/BargainNet_hsynth.py", batch_size=4, lr=5e-4),
)
#: Held out: the working copy without one family (on-the-fly HSynth draws every family).
HELD_OUT_RUN = Run("iSSAM-held-out", "iSSAM", "models/hsynth/iSSAM_hsynth.py", batch_size=16, lr=3e-3, held_out=True,
                   overrides={"live_size": None})
_PAPER_LR = 1e-3 * (8 / 64) ** 0.5
#: The ablations were measured on the fixed 256 px working copy of HSynth-train.
_SHORT = {"snapshot_minutes": 4.0, "live_size": None}
ABLATIONS = (
    Run("abl-paper", "iSSAM", "models/hsynth/iSSAM_hsynth.py", 8, _PAPER_LR,
        overrides={**_SHORT, "work_size": 128, "gate_logit": None, "warmup_minutes": 0.0, "final_lr_ratio": 1.0},
        description="paper recipe at 128 px: official init, batch 8, constant lr 1e-3 x sqrt(8/64)"),
    Run("abl-gate", "iSSAM", "models/hsynth/iSSAM_hsynth.py", 8, _PAPER_LR,
        overrides={**_SHORT, "work_size": 128, "warmup_minutes": 0.0, "final_lr_ratio": 1.0},
        description="+ fusion gate starts near the composite (logit 0.5)"),
    Run("abl-gate-cosine", "iSSAM", "models/hsynth/iSSAM_hsynth.py", 16, 3e-3,
        overrides={**_SHORT, "work_size": 128},
        description="+ batch 16, lr 3e-3, 1 min warm-up, cosine to the end of the budget"),
    Run("abl-64px", "iSSAM", "models/hsynth/iSSAM_hsynth.py", 16, 3e-3, overrides=_SHORT,
        description="+ 64 px crops instead of 128 (the final recipe)"),
)


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def run_command(command: Sequence[str], **kwargs: Any) -> None:
    log("$ " + " ".join(str(c) for c in command))
    subprocess.run([str(c) for c in command], check=True, cwd=REPO, **kwargs)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (for the report's commands)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


class LoadSampler:
    """Samples the 1-minute load average every LOAD_SAMPLE_SECONDS in a thread (a context manager)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(LOAD_SAMPLE_SECONDS):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float | None]:
        if not self.samples:
            return {"load_mean": None, "load_max": None}
        return {"load_mean": float(np.mean(self.samples)), "load_max": float(np.max(self.samples))}


@dataclass(frozen=True)
class Paths:
    """Everything the benchmark writes, under ``out`` (git-ignored) and ``docs``."""

    out: Path
    hsynth: Path
    photos: Path
    shared_data: Path
    docs: Path
    ship_dir: Path

    @property
    def config(self) -> Path:
        return self.out / "config.yml"

    def work_copy(self, held_out_family: str | None) -> Path:
        suffix = f"Without{held_out_family.title().replace('_', '')}" if held_out_family else ""
        return self.out / "data" / f"HSynthW{WORK_COPY_SIZE}{suffix}"

    @property
    def shared_gt(self) -> Path:
        return self.out / "data" / "shared_gt"

    def eval_dir(self, *parts: str) -> Path:
        return self.out.joinpath("eval", *parts)


def experiment_dir(paths: Paths, run: Run) -> Path | None:
    """The experiment folder of ``run`` whose training finished (it holds ``run.json``), if any."""
    done = sorted(paths.out.glob(f"exps/**/[0-9][0-9][0-9]_{run.name}/run.json"))
    return done[-1].parent if done else None


def unfinished_experiment(paths: Paths, run: Run) -> Path | None:
    """The newest experiment folder of ``run`` that saved a training state but did not finish (no ``run.json``)."""
    folders = sorted(paths.out.glob(f"exps/**/[0-9][0-9][0-9]_{run.name}"))
    if folders and not (folders[-1] / "run.json").exists() and (folders[-1] / "checkpoints" / STATE_FILE).is_file():
        return folders[-1]
    return None
