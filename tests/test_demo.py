"""scripts/demo.py's pairing of the real composites without ground truth (the rest of the demo is the
tested scripts it calls; `make demo` runs it whole)."""
from __future__ import annotations

import sys
from pathlib import Path

from iharm.data.io import read_image, read_mask

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import demo  # noqa: E402 (a script, imported for its staging function)


def test_no_gt_composites_are_staged_with_their_masks(shared_data: Path, tmp_path: Path, capsys) -> None:
    folder = shared_data / "composites_no_gt"
    pairs = demo.stage_no_gt(folder, tmp_path)
    # Harmonizer names composite_X / mask_X, BargainNet names X / X_mask; example 2's mask is 512x341
    # for a 512x512 image, which predict_for_dir refuses, so it is left out and said so
    assert sorted(pairs) == ["bargainnet_example_1", "composite_a0196_1", "composite_f636_1", "composite_f855_1"]
    assert pairs["composite_f636_1"].name == "mask_f636_1.jpg"
    assert pairs["bargainnet_example_1"].name == "bargainnet_example_1_mask.png"
    assert "bargainnet_example_2.png: left out" in capsys.readouterr().out
    for stem, mask in pairs.items():
        (image,) = (tmp_path / "images").glob(f"{stem}.*")
        (staged_mask,) = (tmp_path / "masks").glob(f"{stem}.*")
        assert staged_mask.read_bytes() == mask.read_bytes()
        assert read_mask(staged_mask).shape == read_image(image).shape[:2]
