"""Harmony score: the formula, the official script's numbers (bargainnet_vector.pt) and the command line."""
from __future__ import annotations

import csv
import importlib.util
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from iharm.data.errors import DataError
from iharm.data.io import read_image, read_mask
from iharm.inference.harmony_score import (HarmonyScorer, MaskSizeWarning, harmony_score, inharmony_level,
                                           prepare_inputs)
from iharm.model.bargainnet import StyleEncoder
from iharm.model.checkpoints import CheckpointError

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "predict_harmony_score.py"
EXAMPLE = "composites_no_gt/bargainnet_example_{}{}.png"


@pytest.fixture(scope="module")
def vector(reference_dir):
    return torch.load(reference_dir / "bargainnet_vector.pt", weights_only=True)


@pytest.fixture(scope="module")
def scorer(vector) -> HarmonyScorer:
    encoder = StyleEncoder()
    encoder.load_state_dict(vector["state_dict_E"])
    return HarmonyScorer(encoder)


@pytest.fixture(scope="module")
def e_checkpoint(vector, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "latest_net_E.pth"
    torch.save(vector["state_dict_E"], path)
    return path


def _example(shared_data, n: int, part: str = ""):
    return shared_data / EXAMPLE.format(n, part)


class _FixedCodes(nn.Module):
    """Stub E: code (3, 4, 0, ...) for a region containing pixel (0, 0), else zeros."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        code = torch.zeros(image.shape[0], 16, 1, 1)
        code[:, 0], code[:, 1] = 3.0, 4.0
        return code * mask[:, :, :1, :1]


def test_score_formula():
    assert harmony_score(0.0) == 1.0
    assert harmony_score(math.log(2) / 0.04212) == pytest.approx(0.5)
    assert harmony_score(torch.tensor([5.0])).item() == pytest.approx(math.exp(-0.2106))


def test_inharmony_level_is_euclidean_distance_of_codes():
    encoder = _FixedCodes().eval()
    fg = torch.zeros(1, 1, 8, 8)
    fg[..., 4:, 4:] = 1  # the foreground misses pixel (0, 0), the background holds it
    assert inharmony_level(encoder, torch.zeros(1, 3, 8, 8), fg, 1 - fg).item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="train mode"):
        inharmony_level(encoder.train(), torch.zeros(1, 3, 8, 8), fg, 1 - fg)


def test_official_scores_on_the_fixture_batch(vector, scorer):
    official = vector["harmony_score"]
    for s in range(2):
        mask = (vector["inputs"]["mask"][s, 0].numpy() * 255).astype(np.uint8)
        result = scorer.score(vector["inputs_uint8"]["comp_rgb"][s].numpy(), mask)
        assert result.inharmony_level == pytest.approx(official["dist"][s].item(), abs=1e-5)
        assert result.harmony_score == pytest.approx(official["score_unrounded"][s].item(), abs=1e-6)
        assert result.rounded_score == official["score_rounded"][s]


def test_official_repo_example(vector, scorer, shared_data):
    official = vector["harmony_score"]["repo_example_1"]
    image, mask = _example(shared_data, 1), _example(shared_data, 1, "_mask")
    result = scorer.score_files(image, mask)
    assert result.inharmony_level == pytest.approx(0.430395, abs=1e-5)
    assert result.rounded_score == official["score"] == 0.98
    # The codes themselves, with the official preprocessing (RGBA PNG, soft 8-bit mask).
    tensor, fg, bg = prepare_inputs(read_image(image), read_mask(mask))
    with torch.no_grad():
        torch.testing.assert_close(scorer.encoder(tensor, bg), official["bg_code"], atol=1e-5, rtol=0)
        torch.testing.assert_close(scorer.encoder(tensor, fg), official["fg_code"], atol=1e-5, rtol=0)


def test_mask_of_another_size_warns_or_is_refused(scorer, shared_data):
    # A real case: the example image is 512x512, its mask 512x341 (a stretched copy of the right mask).
    image, mask = _example(shared_data, 2), _example(shared_data, 2, "_mask")
    with pytest.warns(MaskSizeWarning, match="mask is 512x341 but the image .*is 512x512; the aspect ratios differ"):
        result = scorer.score_files(image, mask)
    assert 0 < result.harmony_score <= 1
    with pytest.raises(DataError, match="bargainnet_example_2_mask.png: mask is 512x341"):
        scorer.score_files(image, mask, strict_mask_size=True)


def test_empty_or_full_mask_is_refused(scorer):
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="mask is empty"):
        scorer.score(image, np.zeros((64, 64), np.float32))
    with pytest.raises(ValueError, match="covers the whole image"):
        scorer.score(image, np.full((64, 64), 255, np.uint8))


def test_scorer_loads_checkpoints_and_checks_device(e_checkpoint, tmp_path):
    assert isinstance(HarmonyScorer.from_checkpoint(e_checkpoint).encoder, StyleEncoder)
    with pytest.raises(CheckpointError, match="not found"):
        HarmonyScorer.from_checkpoint(tmp_path / "nothing.pth")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            HarmonyScorer.from_checkpoint(e_checkpoint, device="cuda")


# --- command line ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli():
    spec = importlib.util.spec_from_file_location("predict_harmony_score", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_single_image(cli, e_checkpoint, shared_data, capsys):
    code = cli.main(["--checkpoint", str(e_checkpoint), "--image", str(_example(shared_data, 1)),
                     "--mask", str(_example(shared_data, 1, "_mask"))])
    assert code == 0
    assert "is 0.98 (inharmony level 0.4304)" in capsys.readouterr().out


def test_cli_folder_reports_every_problem_and_scores_the_rest(cli, e_checkpoint, shared_data, tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    shutil.copy(_example(shared_data, 1), images / "good.png")
    shutil.copy(_example(shared_data, 1, "_mask"), masks / "good.png")
    shutil.copy(_example(shared_data, 1), images / "orphan.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9")
    shutil.copy(_example(shared_data, 1, "_mask"), masks / "broken_mask.png")
    (images / "notes.txt").write_text("not an image")
    output = tmp_path / "scores.csv"

    code = cli.main(["--checkpoint", str(e_checkpoint), "--images", str(images), "--masks", str(masks),
                     "--output", str(output)])
    captured = capsys.readouterr()
    assert code == 1
    assert "good.png is 0.98" in captured.out
    assert f"{images / 'broken.jpg'}: not a decodable image" in captured.err
    assert f"{images / 'orphan.png'}: no mask found" in captured.err
    assert "notes.txt: skipped" in captured.err
    assert "1 of 3 images scored, 2 failed" in captured.err
    rows = {row["image"]: row for row in csv.DictReader(output.open())}
    assert set(rows) == {str(images / name) for name in ("good.png", "orphan.png", "broken.jpg")}
    good = rows[str(images / "good.png")]
    assert float(good["inharmony_level"]) == pytest.approx(0.430395, abs=1e-5)
    assert float(good["harmony_score"]) == pytest.approx(math.exp(-0.04212 * 0.430395), abs=1e-6)
    assert good["harmony_score_rounded"] == "0.98" and good["error"] == ""
    assert rows[str(images / "broken.jpg")]["harmony_score"] == ""
    assert "not a decodable image" in rows[str(images / "broken.jpg")]["error"]


def test_cli_bad_checkpoint(cli, tmp_path, shared_data, capsys):
    code = cli.main(["--checkpoint", str(tmp_path / "missing.pth"), "--image", str(_example(shared_data, 1)),
                     "--mask", str(_example(shared_data, 1, "_mask"))])
    assert code == 2  # as in every tool: a bad checkpoint is a bad argument
    assert "missing.pth: checkpoint file not found" in capsys.readouterr().err


def test_a_0_1_mask_scores_as_the_same_mask_in_0_255(cli, e_checkpoint, shared_data, tmp_path, capsys):
    """A 0/1 export is binary, not a 1/255 soft mask (which would score about 0.99 without a word)."""
    mask = cv2.imread(str(_example(shared_data, 1, "_mask")), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(tmp_path / "mask01.png"), (mask > 127).astype(np.uint8))
    cv2.imwrite(str(tmp_path / "mask255.png"), (mask > 127).astype(np.uint8) * 255)
    scores = {}
    for name in ("mask01", "mask255"):
        output = tmp_path / f"{name}.csv"
        assert cli.main(["--checkpoint", str(e_checkpoint), "--image", str(_example(shared_data, 1)),
                         "--mask", str(tmp_path / f"{name}.png"), "--output", str(output)]) == 0
        scores[name] = next(csv.DictReader(output.open()))["harmony_score"]
    assert scores["mask01"] == scores["mask255"]
    assert "mask01.png: mask holds only 0 and 1; read as a binary mask" in capsys.readouterr().err
