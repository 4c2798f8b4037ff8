"""scripts/predict_for_dir.py and iharm.inference.full_resolution on users' own files.

Real inputs from ../shared/data/composites_no_gt (3072 x 2048 photos with
3-channel JPEG masks, BargainNet's PNG examples, one with a mask of another
size); expectations from OpenCV reads and known colour transforms.
"""
from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from iharm.inference.full_resolution import WorkingResolution, harmonize_full_resolution
from iharm.model.initializer import init_issam_weights
from iharm.model.registry import get_model_spec
from test_evaluate import load_script
from tiny_data import ellipse_mask, photo, recolor, write_rgb

predict_for_dir = load_script("predict_for_dir")  # the official command line, calling:
harmonize_command = importlib.import_module("iharm.commands.harmonize")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = get_model_spec("iSSAM").build()
    init_issam_weights(model)
    path = tmp_path_factory.mktemp("ckpt") / "issam_seeded.pth"
    torch.save(model.state_dict(), path)
    return path


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def raw_mask(path: Path) -> np.ndarray:
    mask = cv2.imread(str(path))
    return mask[:, :, 0] if mask.ndim == 3 else mask


def run(checkpoint: Path, *args: str) -> int:
    return predict_for_dir.main(["iSSAM", str(checkpoint), "--gpu", "cpu", *args])


def test_full_size_output_keeps_the_background(shared_data: Path, checkpoint: Path, tmp_path: Path) -> None:
    source = shared_data / "composites_no_gt"
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir()
    masks.mkdir()
    for name in ("a0196_1", "f855_1"):  # Harmonizer's composite_<name>.jpg / mask_<name>.jpg
        os.symlink(source / f"composite_{name}.jpg", images / f"{name}.jpg")
        os.symlink(source / f"mask_{name}.jpg", masks / f"{name}.jpg")  # rule 1: same name in --masks
    assert run(checkpoint, "--images", str(images), "--masks", str(masks), "--results-path", str(out)) == 0
    for name, size in (("a0196_1", (3072, 2048)), ("f855_1", (768, 1024))):
        composite, result = rgb(images / f"{name}.jpg"), rgb(out / f"{name}.png")
        assert result.shape[:2] == composite.shape[:2] == size
        background = raw_mask(masks / f"{name}.jpg") == 0
        assert background.any() and np.array_equal(result[background], composite[background])
        assert not np.array_equal(result[~background], composite[~background]), "the foreground was harmonized"
    assert sorted(p.name for p in out.iterdir()) == ["a0196_1.png", "f855_1.png"], "no temporary files left"


def test_mixed_folder_reports_every_problem_and_resumes(shared_data: Path, checkpoint: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    source = shared_data / "composites_no_gt"
    folder, out = tmp_path / "inputs", tmp_path / "out"
    folder.mkdir()
    shutil.copy(source / "bargainnet_example_1.png", folder / "good.png")
    shutil.copy(source / "bargainnet_example_1_mask.png", folder / "good_mask.png")   # rule 2
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a JPEG \xff\xd9")
    shutil.copy(source / "bargainnet_example_1_mask.png", folder / "broken_mask.png")
    shutil.copy(source / "composite_f636_1.jpg", folder / "lonely.jpg")              # no mask at all
    shutil.copy(source / "bargainnet_example_2.png", folder / "bargainnet_example_2.png")  # 512 x 512
    shutil.copy(source / "bargainnet_example_2_mask.png", folder / "bargainnet_example_2_mask.png")  # 512 x 341

    assert run(checkpoint, "--images", str(folder), "--results-path", str(out)) == 1
    err = capsys.readouterr().err
    assert f"{folder / 'broken.jpg'}: not a decodable image" in err
    assert f"{folder / 'lonely.jpg'}: no mask found" in err and "lonely_mask.<ext>" in err
    assert "bargainnet_example_2_mask.png: mask is 512x341 but its image" in err and "512x512" in err
    assert "1 harmonized, 0 skipped" in err and "3 failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]
    good = rgb(out / "good.png")
    assert good.shape == rgb(folder / "good.png").shape

    first_write = (out / "good.png").stat().st_mtime_ns
    assert run(checkpoint, "--images", str(folder), "--results-path", str(out)) == 1  # the problems remain
    assert "0 harmonized, 1 skipped" in capsys.readouterr().err
    assert (out / "good.png").stat().st_mtime_ns == first_write

    (folder / "broken.jpg").unlink()
    (folder / "lonely.jpg").unlink()
    (folder / "bargainnet_example_2.png").unlink()
    assert run(checkpoint, "--images", str(folder), "--results-path", str(out), "--overwrite") == 0
    err = capsys.readouterr().err
    assert "1 harmonized, 0 skipped" in err and "0 failed" in err


def test_single_image_background_harmonization(shared_data: Path, checkpoint: Path, tmp_path: Path) -> None:
    source = shared_data / "composites_no_gt"
    output = tmp_path / "result.png"
    assert run(checkpoint, "--image", str(source / "bargainnet_example_1.png"), "--mask",
               str(source / "bargainnet_example_1_mask.png"), "--output", str(output), "--invert-mask",
               "--resize-mode", "longest") == 0
    composite = rgb(source / "bargainnet_example_1.png")
    result = rgb(output)
    assert result.shape == composite.shape
    foreground = raw_mask(source / "bargainnet_example_1_mask.png") > 100  # the official threshold
    # inverted: the foreground is what is kept, the background is what gets harmonized
    assert np.array_equal(result[foreground], composite[foreground])
    assert not np.array_equal(result[~foreground], composite[~foreground])


class RecordingPredictor:
    """Stands in for a model: records its inputs and returns ``transform(composite)``."""

    def __init__(self, model: str, transform=lambda x: x) -> None:
        self.spec = get_model_spec(model)
        self.transform = transform
        self.calls: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []

    def predict(self, image: np.ndarray, mask: np.ndarray, image_lab: np.ndarray | None = None) -> np.ndarray:
        self.calls.append((image, mask, image_lab))
        return self.transform(image.astype(np.float32))


def test_lab_is_computed_from_rgb_after_resizing() -> None:
    composite = photo("coffee", (600, 400))
    mask = ellipse_mask(400, 600).astype(np.float32) / 255
    predictor = RecordingPredictor("DucoNet")
    harmonize_full_resolution(predictor, composite, mask, WorkingResolution(256, "fixed"))
    (_, _, lab), = predictor.calls
    resized = cv2.resize(composite, (256, 256), interpolation=cv2.INTER_AREA)
    assert np.array_equal(lab, cv2.cvtColor(resized, cv2.COLOR_RGB2Lab))
    # The official order: Lab of the BGR array (read by cv2) with the RGB flag, at the original size.
    official = cv2.cvtColor(cv2.cvtColor(composite, cv2.COLOR_RGB2BGR), cv2.COLOR_RGB2Lab)
    assert official.shape[:2] == (400, 600)  # not even the network's input size
    official_resized = cv2.resize(official, (256, 256), interpolation=cv2.INTER_LINEAR)
    difference = np.abs(official_resized.astype(int) - lab.astype(int))
    assert difference[..., 1:].mean() > 5  # a and b swap their blue/red meaning


def test_a_global_colour_correction_reaches_full_resolution_without_blur() -> None:
    """A model that applies a known affine colour change at 256 px: ``affine`` reproduces it at full size."""
    composite = photo("astronaut", (512, 512))
    mask = ellipse_mask(512, 512).astype(np.float32) / 255
    matrix = np.array([[1.10, 0.05, 0.0], [0.0, 0.90, 0.05], [0.02, 0.0, 0.95]], np.float32)
    offset = np.array([6.0, -4.0, 10.0], np.float32)

    def correct(x: np.ndarray) -> np.ndarray:
        return x @ matrix.T + offset

    expected = np.clip(correct(composite.astype(np.float32)), 0, 255)
    inside = mask > 0
    errors = {}
    for method in ("affine", "resize"):
        result = harmonize_full_resolution(RecordingPredictor("iSSAM", correct), composite, mask,
                                           WorkingResolution(256, "fixed"), method)
        assert np.array_equal(result[~inside], composite[~inside])
        errors[method] = np.abs(result[inside].astype(np.float32) - expected[inside]).mean()
    assert errors["affine"] < 0.6  # rounding and the clipped highlights only
    assert errors["resize"] > 4 * errors["affine"]  # the official upsampling blurs the detail away


def test_precision_flag_reaches_the_predictor(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    real = photo("coffee", (160, 120))
    mask = ellipse_mask(120, 160)
    write_rgb(tmp_path / "comp.png", recolor(real, mask))
    cv2.imwrite(str(tmp_path / "comp_mask.png"), mask)
    built: list[str] = []

    class Recording(harmonize_command.Harmonizer):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            built.append(self.predictor.precision)

    monkeypatch.setattr(harmonize_command, "Harmonizer", Recording)
    results = {}
    for precision in ("fp32", "bf16"):
        output = tmp_path / f"{precision}.png"
        assert run(checkpoint, "--image", str(tmp_path / "comp.png"), "--mask", str(tmp_path / "comp_mask.png"),
                   "--output", str(output), "--precision", precision) == 0
        results[precision] = rgb(output).astype(np.int16)
    assert built == ["float32", "bf16"]
    # bf16 moves the harmonized pixels by a few levels at most; the background is the input in both
    assert np.abs(results["bf16"] - results["fp32"]).mean() < 0.5
    assert np.abs(results["bf16"] - results["fp32"]).max() <= 8
    if not torch.cuda.is_available():
        assert run(checkpoint, "--image", str(tmp_path / "comp.png"), "--mask", str(tmp_path / "comp_mask.png"),
                   "--output", str(tmp_path / "fp16.png"), "--precision", "fp16") == 2
        assert "needs a CUDA device" in capsys.readouterr().err


def test_0_1_masks_are_binary_and_full_masks_are_refused(shared_data: Path, checkpoint: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """One mask rule in every tool: a 0/1 export is a binary mask (not 'empty'); a mask without
    background is refused, as the dataset loader and the harmony score refuse it."""
    source = shared_data / "composites_no_gt"
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    mask = raw_mask(source / "bargainnet_example_1_mask.png")
    for name in ("binary01", "full"):
        shutil.copy(source / "bargainnet_example_1.png", folder / f"{name}.png")
    cv2.imwrite(str(folder / "binary01_mask.png"), (mask > 127).astype(np.uint8))
    cv2.imwrite(str(folder / "full_mask.png"), np.full_like(mask, 255))
    assert run(checkpoint, "--images", str(folder), "--results-path", str(out)) == 1
    err = capsys.readouterr().err
    assert "binary01_mask.png: mask holds only 0 and 1; read as a binary mask" in err
    assert "full_mask.png: mask covers the whole image" in err and "1 harmonized" in err
    composite, result = rgb(folder / "binary01.png"), rgb(out / "binary01.png")
    background = mask <= 127
    assert np.array_equal(result[background], composite[background]) and not np.array_equal(result, composite)
    assert not (out / "full.png").exists()
