"""Experiment folders: ``EXPS_PATH/<model family>/<NNN>_<exp-name>/``.

As in the official code, the family is the model script's path below the
``models`` folder (``models/DucoNet_256.py`` -> ``DucoNet_256``) and NNN counts
up from 000. Each folder holds ``config.yml`` (the resolved configuration),
a copy of the model script, ``logs/`` (log file, TensorBoard events),
``checkpoints/`` and ``vis/``. ``--resume-exp PREFIX`` reopens the unique
folder whose name starts with PREFIX.
"""
from __future__ import annotations

import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from easydict import EasyDict

from iharm.engine.distributed import broadcast_object
from iharm.errors import IharmError


class ExperimentError(IharmError, ValueError):
    """The experiment folder cannot be found or created; the message says which."""


def model_family(model_path: Path) -> Path:
    """``models/fixed256/DucoNet_256.py`` -> ``fixed256/DucoNet_256``; the stem outside ``models``."""
    parts = model_path.resolve().with_suffix("").parts
    if "models" in parts:
        index = len(parts) - 1 - parts[::-1].index("models")
        return Path(*parts[index + 1:])
    return Path(parts[-1])


def _next_number(family_dir: Path) -> int:
    numbers = [int(m.group(1)) for p in family_dir.glob("*") if (m := re.match(r"^(\d{3})(_|$)", p.name))]
    return max(numbers, default=-1) + 1


def find_experiment(family_dir: Path, prefix: str) -> Path:
    matches = sorted(p for p in family_dir.glob(f"{prefix}*") if p.is_dir())
    if len(matches) != 1:
        found = ", ".join(p.name for p in matches) or "none"
        raise ExperimentError(f"--resume-exp {prefix}: expected one experiment in {family_dir} "
                              f"starting with '{prefix}', found {found}")
    return matches[0]


def init_experiment(cfg: EasyDict, model_path: Path, is_main: bool = True) -> EasyDict:
    """Create (or reopen) the experiment folder and add its paths to ``cfg``.

    Adds ``EXP_PATH``, ``CHECKPOINTS_PATH``, ``VIS_PATH``, ``LOGS_PATH``. In a
    distributed run rank 0 chooses the folder and the others follow.
    """
    family_dir = Path(cfg.EXPS_PATH) / model_family(model_path)
    exp_path = None
    if is_main:
        if cfg.get("resume_exp"):
            exp_path = find_experiment(family_dir, cfg.resume_exp)
            if not any((exp_path / "checkpoints").glob("*.pth")):
                raise ExperimentError(f"--resume-exp {cfg.resume_exp}: {exp_path} holds no checkpoint to resume "
                                      "from (checkpoints/ has no .pth file)")
        else:
            family_dir.mkdir(parents=True, exist_ok=True)
            name = f"{_next_number(family_dir):03d}" + (f"_{cfg.exp_name}" if cfg.get("exp_name") else "")
            exp_path = family_dir / name
            exp_path.mkdir()
    exp_path = Path(broadcast_object(str(exp_path)))
    cfg.EXP_PATH = str(exp_path)
    cfg.CHECKPOINTS_PATH = str(exp_path / "checkpoints")
    cfg.VIS_PATH = str(exp_path / "vis")
    cfg.LOGS_PATH = str(exp_path / "logs")
    if is_main:
        for key in ("CHECKPOINTS_PATH", "VIS_PATH", "LOGS_PATH"):
            Path(cfg[key]).mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
        shutil.copy(model_path, exp_path / f"{model_path.stem}_{stamp}.py")
        save_config(cfg, exp_path / ("config.yml" if not cfg.get("resume_exp") else f"config_resume_{stamp}.yml"))
    return cfg


def remove_unused_experiment(exp_path: Path) -> bool:
    """Delete a new experiment folder that got no checkpoint (its run failed a check), so that a
    failed run leaves nothing behind and the next run keeps the number. True if removed."""
    if any((exp_path / "checkpoints").glob("*.pth")):
        return False
    shutil.rmtree(exp_path, ignore_errors=True)
    return True


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def save_config(cfg: EasyDict, path: Path) -> None:
    """The resolved configuration, as YAML, for the record."""
    path.write_text(yaml.safe_dump(_plain(dict(cfg)), sort_keys=True))
