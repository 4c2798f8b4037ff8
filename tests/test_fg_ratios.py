"""scripts/evaluate_model_fg_ratios.py: bucket boundaries, the official closed intervals, DucoNet.

Masks are built with exact foreground ratios (100 x 100 images, whole numbers
of pixels), and no resizing happens (``--resize-strategy None``), so the ratio
of each image is known exactly.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from iharm.model.registry import get_model_spec
from test_evaluate import load_script
from tiny_data import photo, recolor, write_rgb

fg_ratios = load_script("evaluate_model_fg_ratios")

#: foreground ratio of each test image (100 x 100 pixels, so each is a whole number of pixels)
RATIOS = {"r3": 0.03, "r5": 0.05, "r10": 0.10, "r15": 0.15, "r50": 0.50}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 x 100 composites whose masks cover exactly 3, 5, 10, 15 and 50 % of the pixels."""
    folder = tmp_path_factory.mktemp("data") / "Ratios"
    (folder / "masks").mkdir(parents=True)
    names = []
    for i, (real_id, ratio) in enumerate(RATIOS.items()):
        real = photo(("astronaut", "coffee", "chelsea", "rocket")[i % 4], (100, 100))
        mask = np.zeros(100 * 100, np.uint8)
        mask[:round(ratio * 100 * 100)] = 255  # the first rows (and part of one): an exact pixel count
        mask = mask.reshape(100, 100)
        write_rgb(folder / "real_images" / f"{real_id}.jpg", real)
        cv2.imwrite(str(folder / "masks" / f"{real_id}_1.png"), mask)
        write_rgb(folder / "composite_images" / f"{real_id}_1_1.jpg", recolor(real, mask))
        names.append(f"{real_id}_1_1.jpg")
    (folder / "Ratios_test.txt").write_text("".join(n + "\n" for n in names))
    return folder


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("config")
    (folder / "config.yml").write_text(f"EXPS_PATH: {folder / 'exps'}\n")
    return folder / "config.yml"


def run(dataset: Path, config: Path, results: Path, *extra: str, model: tuple[str, ...] = ("Composite",)) -> dict:
    code = fg_ratios.main([*model, "--dataset-path", str(dataset), "--resize-strategy", "None", "--gpu", "cpu",
                           "--workers", "0", "--config-path", str(config), "--results-path", str(results), *extra])
    assert code == 0
    return json.loads((results / "fg_ratios.json").read_text())


def composite_mse(dataset: Path, real_id: str) -> float:
    comp = cv2.imread(str(dataset / "composite_images" / f"{real_id}_1_1.jpg")).astype(np.float64)
    real = cv2.imread(str(dataset / "real_images" / f"{real_id}.jpg")).astype(np.float64)
    return float(((comp - real) ** 2).mean())


def test_half_open_buckets_count_boundary_images_once(dataset: Path, config: Path, tmp_path: Path) -> None:
    out = run(dataset, config, tmp_path)
    rows = out["rows"]
    # 3 % -> [0, 5); 5 % and 10 % -> [5, 15); 15 % and 50 % -> [15, 100]
    assert [rows[f"Ratios {b}"]["N"] for b in ("0%-5%", "5%-15%", "15%-100%", "0%-100%")] == [1, 2, 2, 5]
    assert out["intervals"] == "half-open" and "exactly one bucket" in out["note"]
    expected = np.mean([composite_mse(dataset, "r5"), composite_mse(dataset, "r10")])
    assert rows["Ratios 5%-15%"]["MSE"] == pytest.approx(expected, rel=1e-9)
    log = next(tmp_path.glob("*.log")).read_text()
    assert "half-open [a, b)" in log and "Ratios 15%-100%" in log


def test_legacy_closed_intervals_count_boundary_images_twice(dataset: Path, config: Path, tmp_path: Path) -> None:
    out = run(dataset, config, tmp_path, "--legacy-closed-intervals")
    rows = out["rows"]
    # the official counting: 5 % is in [0, 5] and [5, 15], 15 % in [5, 15] and [15, 100]
    assert [rows[f"Ratios {b}"]["N"] for b in ("0%-5%", "5%-15%", "15%-100%", "0%-100%")] == [2, 3, 2, 5]
    log = next(tmp_path.glob("*.log")).read_text()
    assert "counted in two buckets" in log


def test_duconet_gets_its_lab_image(dataset: Path, config: Path, tmp_path: Path) -> None:
    """The official script passed no Lab image and crashed for DucoNet."""
    torch.manual_seed(0)
    checkpoint = tmp_path / "duconet_seeded.pth"
    torch.save(get_model_spec("DucoNet").build().state_dict(), checkpoint)
    out = run(dataset, config, tmp_path / "results", "--batch-size", "5",
              model=("DucoNet", str(checkpoint)))
    assert out["rows"]["Ratios 0%-100%"]["N"] == 5
    assert out["evaluation"]["model"] == "DucoNet"
