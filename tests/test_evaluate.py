"""scripts/evaluate_model.py and iharm.inference.evaluation, on the CPU.

Expectations are computed independently: OpenCV reads and resizes, numpy
formulas for the metrics, the network called directly for flip TTA.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch

from iharm.inference.evaluation import equal_size_groups
from iharm.model.checkpoints import CheckpointError
from iharm.model.initializer import init_issam_weights
from iharm.model.registry import get_model_spec
from iharm.tools.cli import resolve_checkpoint
from tiny_data import make_dataset

REPO = Path(__file__).resolve().parents[1]
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
CSV_COLUMNS = ["name", "dataset", "MSE", "fMSE", "PSNR", "fPSNR", "SSIM", "fg_ratio", "height", "width",
               "predict_ms"]


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` (not a package) so that its ``main(argv)`` runs in-process."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


evaluate_model = load_script("evaluate_model")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("config")
    path = folder / "config.yml"
    path.write_text(f"EXPS_PATH: {folder / 'exps'}\nMODELS_PATH: {folder / 'models'}\n")
    return path


@pytest.fixture(scope="module")
def issam_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The registered iSSAM with a seeded official initialisation, saved as a bare state dict."""
    torch.manual_seed(0)
    model = get_model_spec("iSSAM").build()
    init_issam_weights(model)
    path = tmp_path_factory.mktemp("ckpt") / "issam_seeded.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 96 x 64: multiples of 32, so with --resize-strategy None nothing is resized or padded
    return make_dataset(tmp_path_factory.mktemp("data"), name="Tiny", size=(96, 64), splits={"test": 2})


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open() as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def resized_triplet(composite: Path, real: Path, mask: Path, size: int | None = 256):
    """Independent reading: cv2.imread, BGR->RGB, mask channel 0 / 255, cv2 bilinear resize (``None``: none)."""
    def rgb(path: Path) -> np.ndarray:
        return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)

    m = cv2.imread(str(mask))
    m = (m[:, :, 0] if m.ndim == 3 else m).astype(np.float32) / 255
    def resize(a: np.ndarray) -> np.ndarray:
        return a if size is None else cv2.resize(a, (size, size), interpolation=cv2.INTER_LINEAR)

    return resize(rgb(composite)).astype(np.float64), resize(rgb(real)).astype(np.float64), resize(m).astype(np.float64)


def numpy_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    err = (pred - target) ** 2
    mse = err.mean()
    return {"MSE": mse, "fMSE": (mask[..., None] * err).sum() / (3 * mask.sum() + 1e-6),
            "PSNR": 10 * np.log10(target.max() ** 2 / (mse + 1e-6))}


def test_composite_table_matches_numpy_on_iharmony4_mini(shared_data: Path, config: Path, tmp_path: Path) -> None:
    mini = shared_data / "iharmony4_mini"
    results = tmp_path / "results"
    code = evaluate_model.main(["Composite", "--dataset-path", f"{mini / 'HCOCO'},{mini / 'HAdobe5k'}",
                                "--gpu", "cpu", "--workers", "0", "--config-path", str(config),
                                "--results-path", str(results), "--save-images", str(tmp_path / "images")])
    assert code == 0
    columns, rows = read_csv(results / "per_image.csv")
    assert columns == CSV_COLUMNS
    expected: dict[str, dict[str, float]] = {}
    for folder, real_of in (("HCOCO", lambda n: "c35030"), ("HAdobe5k", lambda n: "a0002")):
        for name in (mini / folder / f"{folder}_test.txt").read_text().split():
            comp, real, mask = resized_triplet(mini / folder / "composite_images" / name,
                                               mini / folder / "real_images" / f"{real_of(name)}.jpg",
                                               mini / folder / "masks" / f"{name.rsplit('_', 1)[0]}.png")
            expected[name] = {**numpy_metrics(comp, real, mask), "fg_ratio": float((mask > 0.5).mean())}
            saved = cv2.imread(str(tmp_path / "images" / folder / f"{Path(name).stem}.png"))
            assert np.array_equal(cv2.cvtColor(saved, cv2.COLOR_BGR2RGB), comp)  # the prediction is the input
    assert sorted(r["name"] for r in rows) == sorted(expected)
    for row in rows:
        for key, value in expected[row["name"]].items():
            assert float(row[key]) == pytest.approx(value, rel=1e-5, abs=1e-4), (row["name"], key)
        assert (row["height"], row["width"]) == ("256", "256")

    summary = json.loads((results / "summary.json").read_text())
    assert summary["model"] == "Composite" and summary["checkpoint"] is None
    assert (summary["resize_strategy"], summary["flip"], summary["device"]) == ("Fixed256", False, "cpu")
    assert summary["metric_variant"] == {"psnr_peak": "gt_max", "fmse_mask": "soft"} and summary["output"] == "raw"
    assert "avg_time_definition" in summary and summary["images_per_second"] > 0
    hcoco = [v for n, v in expected.items() if n.startswith("c")]
    assert summary["datasets"]["HCOCO"]["N"] == 4
    assert summary["datasets"]["HCOCO"]["MSE"] == pytest.approx(np.mean([v["MSE"] for v in hcoco]), rel=1e-6)
    # Overall pools images: 4 HCOCO + 1 HAdobe5k, each image weighs the same
    assert summary["overall"]["N"] == 5
    assert summary["overall"]["fMSE"] == pytest.approx(np.mean([v["fMSE"] for v in expected.values()]), rel=1e-6)

    (log_file,) = results.glob("*.log")
    log = log_file.read_text()
    assert "psnr_peak=gt_max, fmse_mask=soft" in log and "raw network output" in log
    assert "Overall" in log and "HAdobe5k" in log


def independent_prediction(model: torch.nn.Module, composite: np.ndarray, mask: np.ndarray, flip: bool) -> np.ndarray:
    """The network called directly on an ImageNet-normalised input whose sides are multiples of 32."""
    image = torch.from_numpy(((composite / 255 - MEAN) / STD).transpose(2, 0, 1)[None]).float()
    m = torch.from_numpy(mask[None, None]).float()
    with torch.no_grad():
        out = model(image, m)["images"]
        if flip:
            out = 0.5 * (out + model(image.flip(-1), m.flip(-1))["images"].flip(-1))
    out = out[0].numpy().transpose(1, 2, 0).astype(np.float64)
    return np.clip((out * STD + MEAN) * 255, 0, 255)


@pytest.mark.parametrize("options", [("--use-flip", "--batch-size", "2"), ("--composite-output", "--batch-size", "1")])
def test_model_predictions_through_the_script(options: tuple[str, ...], tiny: Path, issam_checkpoint: Path,
                                              config: Path, tmp_path: Path) -> None:
    code = evaluate_model.main(["iSSAM", str(issam_checkpoint), "--dataset-path", str(tiny), "--gpu", "cpu",
                                "--resize-strategy", "None", "--workers", "0", "--config-path", str(config),
                                "--results-path", str(tmp_path), *options])
    assert code == 0
    _, rows = read_csv(tmp_path / "per_image.csv")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["flip"] == ("--use-flip" in options)
    assert summary["output"] == ("composited" if "--composite-output" in options else "raw")
    assert len(rows) == 2
    model = get_model_spec("iSSAM").build()
    model.load_state_dict(torch.load(issam_checkpoint, weights_only=True))
    model.eval()
    for row in rows:
        stem = Path(row["name"]).stem
        comp, real, mask = resized_triplet(tiny / "composite_images" / row["name"],
                                           tiny / "real_images" / f"{stem.split('_')[0]}.jpg",
                                           tiny / "masks" / f"{stem.rsplit('_', 1)[0]}.png", size=None)
        pred = independent_prediction(model, comp, mask, flip="--use-flip" in options)
        if "--composite-output" in options:
            pred = pred * mask[..., None] + comp * (1 - mask[..., None])
        for key, value in numpy_metrics(pred, real, mask).items():
            assert float(row[key]) == pytest.approx(value, rel=1e-4, abs=1e-3), (row["name"], key)


def test_equal_size_groups_batch_equal_sizes_within_the_pixel_budget() -> None:
    sizes = [(64, 96), (64, 96), (32, 32), (64, 96), (32, 32), (64, 96)]
    samples = [{"images": torch.zeros(3, h, w, dtype=torch.uint8), "i": i} for i, (h, w) in enumerate(sizes)]
    groups = [[s["i"] for s in g] for g in equal_size_groups(samples, max_pixels=3 * 64 * 96)]
    assert groups == [[0, 1, 3], [5], [2, 4]]
    assert [len(g) for g in equal_size_groups(samples, max_pixels=1)] == [1] * 6  # never less than one image


def test_checkpoint_resolution_follows_the_official_rules(tmp_path: Path) -> None:
    models = tmp_path / "models"
    files = {name: models / name for name in ("DucoNet256.pth", "duconet_run/last_checkpoint.pth",
                                               "issam_run/checkpoints/last_checkpoint.pth", "issam_run/120.pth")}
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    outside = tmp_path / "elsewhere.pth"
    outside.write_bytes(b"x")
    assert resolve_checkpoint(str(outside), models) == outside                              # an existing path
    assert resolve_checkpoint("DucoNet256.pth", models) == files["DucoNet256.pth"]          # relative to MODELS_PATH
    assert resolve_checkpoint("120", models) == files["issam_run/120.pth"]                  # unique 120*.pth below it
    assert resolve_checkpoint("duconet:last_checkpoint.pth", models) == files["duconet_run/last_checkpoint.pth"]
    assert resolve_checkpoint("issam:last", models) == files["issam_run/checkpoints/last_checkpoint.pth"]
    with pytest.raises(CheckpointError, match="expected one last_checkpoint"):
        resolve_checkpoint("last_checkpoint", models)                                        # two candidates
    with pytest.raises(CheckpointError, match="expected one folder"):
        resolve_checkpoint("nothing:last", models)
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint("missing.pth", models)
    with pytest.raises(CheckpointError, match="MODELS_PATH"):
        resolve_checkpoint("missing.pth", None)


def test_bad_arguments_fail_clearly(config: Path, tiny: Path, issam_checkpoint: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    def error_of(argv: list[str]) -> str:
        assert evaluate_model.main(argv) == 2
        return capsys.readouterr().err

    base = ["--dataset-path", str(tiny), "--config-path", str(config), "--workers", "0", "--gpu", "cpu"]
    assert "takes no checkpoint" in error_of(["Composite", str(issam_checkpoint), *base])
    assert "unknown model 'NoSuchNet'" in error_of(["NoSuchNet", str(issam_checkpoint), *base])
    assert "does not match DucoNet_model" in error_of(["DucoNet", str(issam_checkpoint), *base])
    assert "needs a checkpoint" in error_of(["iSSAM", *base])
    assert "'HCOCO_PATH' is not set" in error_of(["Composite", "--datasets", "HCOCO", "--config-path", str(config)])
    if not torch.cuda.is_available():
        assert "CUDA is not available" in error_of(["Composite", *base[:-1], "0"])


def test_precision_flag_reaches_the_predictor(tiny: Path, issam_checkpoint: Path, config: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import iharm.inference.predictor as predictor

    built: list[str] = []

    class Recording(predictor.Predictor):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            built.append(self.precision)

    monkeypatch.setattr(predictor, "Predictor", Recording)  # what build_predictor makes
    base = ["iSSAM", str(issam_checkpoint), "--dataset-path", str(tiny), "--gpu", "cpu", "--resize-strategy", "None",
            "--workers", "0", "--config-path", str(config)]
    rows = {}
    for precision in ("fp32", "bf16"):
        results = tmp_path / precision
        assert evaluate_model.main([*base, "--results-path", str(results), "--precision", precision]) == 0
        assert json.loads((results / "summary.json").read_text())["precision"] == precision
        rows[precision] = {row["name"]: row for row in read_csv(results / "per_image.csv")[1]}
    assert built == ["float32", "bf16"]
    captured = capsys.readouterr()
    assert "precision bf16" in captured.out + captured.err  # the table header states it
    # bf16 changes the metrics a little, not a lot (the full-size comparison is in docs/performance.md)
    assert rows["fp32"].keys() == rows["bf16"].keys()
    for name, row in rows["fp32"].items():
        assert float(rows["bf16"][name]["PSNR"]) == pytest.approx(float(row["PSNR"]), abs=0.5), name
    if not torch.cuda.is_available():
        assert evaluate_model.main([*base, "--precision", "fp16"]) == 2
        assert "needs a CUDA device" in capsys.readouterr().err


def test_bf16_output_is_close_to_fp32(issam_checkpoint: Path) -> None:
    from iharm.inference.predictor import build_predictor

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8, generator=generator)
    masks = torch.zeros(2, 1, 64, 96)
    masks[..., 16:48, 24:72] = 1.0
    outputs = {precision: build_predictor("iSSAM", issam_checkpoint, "cpu", precision=precision)
               .predict_batch(images, masks) for precision in ("fp32", "bf16")}
    assert outputs["bf16"].dtype == torch.float32
    difference = (outputs["bf16"] - outputs["fp32"]).abs()
    assert difference.max() > 0, "bf16 autocast was not in effect"
    # bfloat16 keeps 8 significant bits: a few 0..255 levels at most, well under one on average
    assert difference.mean() < 0.5 and difference.max() < 8.0
