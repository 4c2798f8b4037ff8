"""Model cards: the shipped weights and the candidates kept, which a final run continues from."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from iharm.tools.quality_benchmark.common import Paths, Run, experiment_dir, read_json

CANDIDATES = Path("candidates")


def shipped_card(paths: Paths, model: str) -> dict[str, Any] | None:
    """The model card (``<model>_hsynth.json``) of the weights shipped for ``model``, or None."""
    path = paths.ship_dir / f"{model}_hsynth.json"
    return read_json(path) if path.is_file() else None


def candidate_cards(paths: Paths, model: str = "*") -> list[Path]:
    """The model cards of the candidates kept for ``model`` (``*``: every model), in name order."""
    return sorted((paths.ship_dir / CANDIDATES).glob(f"{model}_hsynth_run*.json"))


def starting_card(paths: Paths, model: str) -> tuple[Path, dict[str, Any]] | None:
    """``(card path relative to ship_dir, card)`` of the best weights kept for ``model``: the shipped ones or a
    candidate (``ship_dir/candidates``: better than the shipped, short of the ship rule), the lowest HSynth-test
    fMSE of them; None when nothing is kept. A final run continues from them."""
    cards = [paths.ship_dir / f"{model}_hsynth.json", *candidate_cards(paths, model)]
    kept = [(card.relative_to(paths.ship_dir), read_json(card)) for card in cards if card.is_file()]
    return min(kept, key=lambda item: item[1]["hsynth_test"]["model"]["fMSE"], default=None)


def shipped_weights(paths: Paths, model: str) -> Path | None:
    """The weights shipped for ``model`` (``<model>_hsynth.pth`` beside its card), or None."""
    weights = paths.ship_dir / f"{model}_hsynth.pth"
    return weights if weights.is_file() and shipped_card(paths, model) is not None else None


def final_source(paths: Paths, run: Run) -> tuple[str, Path] | None:
    """``(evaluation name, weights)`` of the report's row for a final run's model: its finished training in
    ``--out``; else the weights shipped for the model (trained by earlier runs, possibly on other machines;
    evaluated as ``<run>-shipped``, so never mistaken for a run of this benchmark); None when neither exists."""
    exp = experiment_dir(paths, run)
    if exp is not None:
        return run.name, exp / "checkpoints" / "last_checkpoint.pth"
    weights = shipped_weights(paths, run.model)
    return (f"{run.name}-shipped", weights) if weights is not None else None
