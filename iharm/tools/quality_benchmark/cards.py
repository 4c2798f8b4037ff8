"""Model cards: the shipped weights and the candidates kept, which a final run continues from."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from iharm.tools.quality_benchmark.common import Paths, read_json

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
