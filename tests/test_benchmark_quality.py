"""The quality benchmark's plumbing on a tiny scale (not its scores).

Held-out-family filtering and the working copy, per-group aggregation against
a hand computation, tables and figures, and ``scripts/benchmark_quality.py``
end to end on a tiny HSynth-like dataset with one-step models.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from iharm.data.hdataset import HDataset
from iharm.data.hsynth.subsets import select_composites, write_working_copy
from iharm.data.io import read_image, read_mask
from iharm.data.transforms import HCompose, resize_transform
from iharm.inference.report import ImageResult, write_per_image_csv
from iharm.tools.quality import (grouped_summaries, markdown_table, read_per_image_csv, result_grid,
                                 with_ratio, write_small_jpeg)
from iharm.tools.quality_benchmark import cards, common, ship, training
from tiny_data import make_dataset

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("curves", "reinhard", "curves", "lut3d", "reinhard", "curves")


def _tiny_hsynth(root: Path, splits: dict[str, int]) -> Path:
    """A tiny dataset with a meta.tsv assigning the transform families FAMILIES in list order."""
    folder = make_dataset(root, name="HSynth", size=(48, 40), splits=splits)
    names = [(split, name) for split in splits for name in (folder / f"HSynth_{split}.txt").read_text().split()]
    lines = ["composite\tsource_photo\tsplit\tfamily"]
    lines += [f"{name}\t{name.split('_')[0]}.jpg\t{split}\t{FAMILIES[i % len(FAMILIES)]}"
              for i, (split, name) in enumerate(names)]
    (folder / "meta.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def hsynth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_hsynth(tmp_path_factory.mktemp("data"), {"train": 6, "test": 6})


def test_select_composites_drops_only_the_held_out_family() -> None:
    families = {"a_1_1.jpg": "curves", "b_1_1.jpg": "lut3d", "c_1_1.jpg": "curves", "d_1_1.jpg": "reinhard"}
    names = list(families)
    assert select_composites(names, families, ("curves",)) == ["b_1_1.jpg", "d_1_1.jpg"]
    assert select_composites(names, families, ()) == names
    with pytest.raises(ValueError, match="no composite of family gain_field"):
        select_composites(names, families, ("gain_field",))  # a typo must not hold out nothing
    with pytest.raises(KeyError, match="not in meta.tsv"):
        select_composites([*names, "e_1_1.jpg"], families, ())


def test_working_copy_is_the_evaluation_resize_of_train_only(hsynth: Path, tmp_path: Path) -> None:
    dest = tmp_path / "HSynthW256WithoutCurves"
    assert write_working_copy(hsynth, dest, 256, exclude_families=("curves",)) == 3
    listed = (dest / "HSynthW256WithoutCurves_train.txt").read_text().split()
    train = (hsynth / "HSynth_train.txt").read_text().split()
    assert listed == [train[1], train[3], train[4]]  # FAMILIES: curves, reinhard, curves, lut3d, reinhard, curves
    assert not (dest / "HSynthW256WithoutCurves_test.txt").exists()
    # the same pixels as the evaluation's Fixed256 resize of the original (up to JPEG / PNG storage)
    source = HDataset(hsynth, "train", augmentator=HCompose([resize_transform("Fixed256")]), lab="none")
    index = train.index(listed[0])
    expected = source.augment_sample(source.get_sample(index), np.random.default_rng(0))
    copied = HDataset(dest, "train", lab="none").get_sample(0)
    assert copied["image"].shape == (256, 256, 3)
    assert np.abs(copied["image"].astype(float) - expected["image"]).mean() < 3.0  # JPEG quality 95
    assert np.abs(copied["mask"] - expected["mask"]).max() <= 0.5 / 255 + 1e-6
    # made again with the same arguments: reused; with others: refused
    assert write_working_copy(hsynth, dest, 256, exclude_families=("curves",)) == 3
    with pytest.raises(FileExistsError):
        write_working_copy(hsynth, dest, 256)


def _result(name: str, fmse: float, mse: float, ratio: float) -> ImageResult:
    return ImageResult(name=name, dataset="HSynth", metrics={"MSE": mse, "fMSE": fmse, "PSNR": 30.0 + mse,
                                                             "fPSNR": 20.0, "SSIM": 0.5 + mse / 100},
                       fg_ratio=ratio, height=8, width=8, predict_seconds=0.001)


def test_grouped_summaries_match_a_hand_computation(tmp_path: Path) -> None:
    results = [_result("a", 100.0, 1.0, 0.02), _result("b", 300.0, 3.0, 0.10), _result("c", 50.0, 2.0, 0.50),
               _result("d", 10.0, 8.0, 0.30)]
    family = {"a": "curves", "b": "lut3d", "c": "curves", "d": "curves"}
    csv_path = tmp_path / "per_image.csv"
    write_per_image_csv(csv_path, results)  # through the evaluation's CSV, as the benchmark reads it
    rows = grouped_summaries(read_per_image_csv(csv_path), lambda r: family[r.name], ["curves", "lut3d", "retouch"])
    assert rows["curves"]["N"] == 3
    assert rows["curves"]["fMSE"] == pytest.approx((100 + 50 + 10) / 3)
    assert rows["curves"]["MSE"] == pytest.approx((1 + 2 + 8) / 3)
    assert rows["curves"]["SSIM"] == pytest.approx(0.5 + (1 + 2 + 8) / 300)
    assert rows["lut3d"]["fMSE"] == pytest.approx(300.0) and rows["lut3d"]["N"] == 1
    assert rows["retouch"]["N"] == 0 and np.isnan(rows["retouch"]["fMSE"])
    assert list(grouped_summaries(results, lambda r: None if r.name == "b" else "x")) == ["x"]
    ratio = with_ratio(rows["curves"], {"fMSE": 160.0})["fMSE / Composite"]
    assert ratio == pytest.approx(((100 + 50 + 10) / 3) / 160.0)


def test_markdown_table_formats_each_column() -> None:
    table = markdown_table({"Composite": {"N": 3.0, "fMSE": 837.123, "SSIM": 0.91234, "PSNR": float("nan")}},
                           ("N", "fMSE", "PSNR", "SSIM"), "model")
    assert table.splitlines() == ["| model | N | fMSE | PSNR | SSIM |", "|---|---|---|---|---|",
                                  "| Composite | 3 | 837.1 | - | 0.9123 |"]


def test_result_grid_and_small_jpeg(tmp_path: Path) -> None:
    wide, mask = np.full((40, 80, 3), 100, np.uint8), np.zeros((40, 80), np.uint8)
    grid = result_grid([[wide, mask, wide], [wide[:, :20], mask[:, :20], wide[:, :20]]], ["a", "b", "c"],
                       tile=20, gap=2)
    assert grid.shape == (22 + 2 * 22, 3 * 22, 3)  # a 22 px header, then 20 px cells with 2 px gaps
    first, second = grid[22:42, :20], grid[44:64, :20]
    assert (first[5:15] == 100).all() and (first[:5] == 255).all()  # 2:1 image: 20 x 10, centred
    assert (second[:, 5:15] == 100).all() and (second[:, :5] == 255).all()  # 1:2 image: 10 x 20, centred
    noisy = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    size = write_small_jpeg(tmp_path / "grid.jpg", noisy, max_bytes=60_000)
    assert size == (tmp_path / "grid.jpg").stat().st_size <= 60_000
    with pytest.raises(ValueError, match="does not fit"):
        write_small_jpeg(tmp_path / "big.jpg", noisy, max_bytes=1_000)


def test_benchmark_end_to_end_with_one_step_models(tmp_path: Path) -> None:
    """data -> train (1 step) -> evaluate -> report -> ship on a tiny dataset: the report has every table.
    A model with shipped weights and no run here (DucoNet) is evaluated from those weights, labelled so,
    and its weights and card are left as they were."""
    hsynth = _tiny_hsynth(tmp_path / "datasets", {"train": 6, "test": 6})
    (tmp_path / "ship").mkdir()
    for name in ("DucoNet_hsynth.pth", "DucoNet_hsynth.json"):
        shutil.copyfile(REPO / "checkpoints" / "hsynth" / name, tmp_path / "ship" / name)
    shipped = json.loads((tmp_path / "ship" / "DucoNet_hsynth.json").read_text())
    shared = tmp_path / "shared"
    (shared / "composites_no_gt").mkdir(parents=True)
    image = read_image(hsynth / "composite_images" / "p6_1_1.jpg")
    cv2.imwrite(str(shared / "composites_no_gt" / "bargainnet_example_1.png"), image[..., ::-1])
    mask = (read_mask(hsynth / "masks" / "p6_1.png") * 255).astype(np.uint8)
    cv2.imwrite(str(shared / "composites_no_gt" / "bargainnet_example_1_mask.png"), cv2.resize(mask, (48, 30)))
    command = [sys.executable, str(REPO / "scripts/benchmark_quality.py"), "--out", str(tmp_path / "out"),
               "--hsynth", str(hsynth), "--shared-data", str(shared), "--docs", str(tmp_path / "docs"),
               "--ship-dir", str(tmp_path / "ship"), "--models", "iSSAM", "--held-out-family", "reinhard",
               "--photos", str(hsynth / "real_images"),  # the photos the tiny HSynth was made of
               "--stages", "data,train,evaluate,report,ship", "--minutes", "2", "--max-steps", "1", "--batch-size", "2",
               "--threads", "1", "--workers", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (tmp_path / "docs" / "quality.md").read_text()
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["composite"]["N"] == 6 and results["models"]["iSSAM"]["N"] == 6
    for heading in ("## HSynth-test", "### Targets", "## Per foreground-ratio bucket", "## Per transform family",
                    "## Held-out family: reinhard", "## Real composites without ground truth"):
        assert heading in report
    assert set(results["families"]) == {f"{f}: {m}" for f in ("curves", "lut3d", "reinhard")
                                        for m in ("Composite", "iSSAM", "DucoNet")}  # DucoNet: shipped weights
    assert set(results["held_out"]) == {f"{g}: iSSAM, {w}" for g in ("reinhard (held out)", "other families")
                                        for w in ("all families", "without reinhard")}
    assert results["held_out"]["reinhard (held out): iSSAM, all families"]["N"] == 2  # test: c r c l r c
    # the held-out run never saw a reinhard composite
    copy = tmp_path / "out" / "data" / "HSynthW256WithoutReinhard"
    assert len((copy / "HSynthW256WithoutReinhard_train.txt").read_text().split()) == 4
    # the mask of another size was resized to the image and the grid written small
    assert "the mask was resized to the image" in report
    assert (tmp_path / "docs" / "images" / "quality_no_gt_grid.jpg").stat().st_size < 300_000
    assert results["runs"]["iSSAM"]["steps"] == 1
    assert set(results["runs"]) == {"iSSAM", "iSSAM-held-out"}  # DucoNet was not trained here
    assert results["models"]["DucoNet"]["N"] == 6 and results["models"]["DucoNet"] != results["composite"]
    assert results["shipped_rows"] == {"DucoNet": {"weights": "DucoNet_hsynth.pth", "sha256": shipped["sha256"],
                                                   "total_minutes": shipped["total_minutes"],
                                                   "total_images": shipped["total_images"],
                                                   "runs": len(shipped["history"])}}
    assert "DucoNet: no run of this benchmark; its rows are those of the shipped weights" in report
    assert (tmp_path / "out" / "eval" / "hsynth" / "DucoNet-shipped" / "final" / "summary.json").is_file()
    assert not (tmp_path / "out" / "eval" / "hsynth" / "DucoNet").exists()
    assert hashlib.sha256((tmp_path / "ship" / "DucoNet_hsynth.pth").read_bytes()).hexdigest() == shipped["sha256"]
    assert json.loads((tmp_path / "ship" / "DucoNet_hsynth.json").read_text()) == shipped
    # a one-step model does not beat Composite clearly: nothing is shipped; it is kept as a candidate only
    # when its HSynth-test fMSE is below Composite's
    assert not (tmp_path / "ship" / "iSSAM_hsynth.pth").exists()
    kept = results["models"]["iSSAM"]["fMSE"] < results["composite"]["fMSE"]
    assert (tmp_path / "ship" / "candidates" / "iSSAM_hsynth_run1.pth").exists() == kept


def _pipeline() -> SimpleNamespace:
    """The quality benchmark's stage functions, and the script's parse_args (imported for its arguments)."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import benchmark_quality  # noqa: E402 (a script)
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return SimpleNamespace(Paths=common.Paths, RATIO=common.RATIO, FINAL_RUNS=common.FINAL_RUNS,
                           stage_ship=ship.stage_ship, starting_card=cards.starting_card,
                           train_run=training.train_run, parse_args=benchmark_quality.parse_args)


def _ship_fixture(hsynth: Path, tmp_path: Path, weights: bytes):
    bq = _pipeline()
    paths = bq.Paths(out=tmp_path / "out", hsynth=hsynth, photos=tmp_path, shared_data=tmp_path,
                     docs=tmp_path / "docs", ship_dir=tmp_path / "ship")
    exp = paths.out / "exps" / "hsynth" / "iSSAM_hsynth" / "000_iSSAM"
    (exp / "checkpoints").mkdir(parents=True, exist_ok=True)
    (exp / "checkpoints" / "last_checkpoint.pth").write_bytes(weights)
    (exp / "run.json").write_text("{}")
    return bq, paths


def _results(bq, fmse: float, shared_fmse: float, continued: bool = False, minutes: float = 45) -> dict:
    composite = {"N": 6.0, "fMSE": 800.0, "PSNR": 30.0}
    record = {"command": "python train.py ...", "minutes": minutes, "steps": 10, "images": 160, "seed": 0,
              "images_per_second": 0.06, "cpu_model": "a CPU", "precision": "fp32", "threads": 2,
              "load_mean": 2.0, "load_max": 2.1, "finished": "2026-12-02T15:00:00",
              "continued_from": {"weights": "iSSAM_hsynth.pth"} if continued else None}
    return {"composite": composite,
            "models": {"iSSAM": {"N": 6.0, "fMSE": fmse, "PSNR": 31.0, bq.RATIO: fmse / 800.0},
                       "DucoNet": {"N": 6.0, "fMSE": 760.0, "PSNR": 30.1, bq.RATIO: 0.95}},
            "shared_all": {"Composite": {"N": 9.0, "fMSE": 500.0, "PSNR": 30.0},
                           "iSSAM": {"N": 9.0, "fMSE": shared_fmse, "PSNR": 31.0}},
            "runs": {"iSSAM": record, "DucoNet": record}}


def test_ship_copies_a_clear_winner_with_its_record_and_the_test_photos(hsynth: Path, tmp_path: Path) -> None:
    bq, paths = _ship_fixture(hsynth, tmp_path, b"weights")
    bq.stage_ship(paths, _results(bq, fmse=400.0, shared_fmse=450.0))
    assert (paths.ship_dir / "iSSAM_hsynth.pth").read_bytes() == b"weights"
    assert not (paths.ship_dir / "DucoNet_hsynth.pth").exists()  # 0.95 x Composite is not a clear win
    record = json.loads((paths.ship_dir / "iSSAM_hsynth.json").read_text())
    assert record["model"] == "iSSAM" and record["hsynth_test"]["model"]["fMSE"] == 400.0
    assert (record["total_minutes"], record["total_images"], len(record["history"])) == (45, 160, 1)
    assert record["sha256"] == hashlib.sha256(b"weights").hexdigest()
    # the test photos are those of the test split in meta.tsv: p6 ... p11 (make_dataset numbers photos in order)
    test_photos = (paths.ship_dir / "test_photos.txt").read_text().split()
    assert test_photos == sorted(f"p{i}.jpg" for i in range(6, 12))
    card = (paths.ship_dir / "README.md").read_text()
    assert "iSSAM_hsynth.pth" in card and "a CPU" in card and "160 training images seen" in card


def test_ship_refuses_a_model_that_loses_on_the_real_files(hsynth: Path, tmp_path: Path) -> None:
    bq, paths = _ship_fixture(hsynth, tmp_path, b"weights")
    bq.stage_ship(paths, _results(bq, fmse=400.0, shared_fmse=520.0))  # 0.5 x on HSynth, worse on real files
    assert not (paths.ship_dir / "iSSAM_hsynth.pth").exists()


def test_a_continued_run_replaces_the_shipped_weights_only_when_it_beats_them(hsynth: Path, tmp_path: Path) -> None:
    bq, paths = _ship_fixture(hsynth, tmp_path, b"first")
    bq.stage_ship(paths, _results(bq, fmse=500.0, shared_fmse=450.0))
    _ship_fixture(hsynth, tmp_path, b"worse")
    bq.stage_ship(paths, _results(bq, fmse=520.0, shared_fmse=440.0, continued=True))
    assert (paths.ship_dir / "iSSAM_hsynth.pth").read_bytes() == b"first"
    _ship_fixture(hsynth, tmp_path, b"better")
    bq.stage_ship(paths, _results(bq, fmse=450.0, shared_fmse=440.0, continued=True, minutes=120))
    assert (paths.ship_dir / "iSSAM_hsynth.pth").read_bytes() == b"better"
    record = json.loads((paths.ship_dir / "iSSAM_hsynth.json").read_text())
    assert (record["total_minutes"], record["total_images"]) == (165, 320)
    assert [run["hsynth_test_fmse"] for run in record["history"]] == [500.0, 450.0]


def test_a_refused_improvement_is_kept_as_a_candidate_and_the_next_run_continues_from_it(
        hsynth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """0.85 x Composite fails the ship rule but beats Composite: kept in candidates/ (never replaced), and the
    next final run starts from it and, once it ships, counts its history."""
    bq, paths = _ship_fixture(hsynth, tmp_path, b"run1")
    bq.stage_ship(paths, _results(bq, fmse=680.0, shared_fmse=450.0))  # 0.85 x: not shipped
    candidate = paths.ship_dir / "candidates" / "iSSAM_hsynth_run1.pth"
    assert not (paths.ship_dir / "iSSAM_hsynth.pth").exists() and candidate.read_bytes() == b"run1"
    card = json.loads(candidate.with_suffix(".json").read_text())
    assert card["weights"] == candidate.name and "0.850 x Composite > 0.8" in card["not_shipped_because"][0]
    assert "Not shipped: HSynth-test fMSE 0.850" in (candidate.parent / "README.md").read_text()
    assert bq.starting_card(paths, "iSSAM")[0] == Path("candidates/iSSAM_hsynth_run1.json")
    assert bq.starting_card(paths, "DucoNet") is None

    # the next final run is started from the candidate's weights
    commands = []

    def stop(command, **kwargs):
        commands.append([str(c) for c in command])
        raise InterruptedError

    monkeypatch.setattr(training, "run_command", stop)
    args = bq.parse_args(["--models", "iSSAM"])
    fresh_out = bq.Paths(out=tmp_path / "out2", hsynth=hsynth, photos=tmp_path, shared_data=tmp_path,
                         docs=tmp_path / "docs", ship_dir=paths.ship_dir)  # no finished run to reuse
    with pytest.raises(InterruptedError):
        bq.train_run(fresh_out, bq.FINAL_RUNS[0], 1.0, args, "reinhard")
    assert commands[0][commands[0].index("--weights") + 1] == str(candidate)
    assert commands[0][2] == str(REPO / "models/hsynth/iSSAM_hsynth.py") and "--set" not in commands[0]
    # --work-size trains the final runs on other crops: the recipe with --set work_size=128
    with pytest.raises(InterruptedError):
        bq.train_run(fresh_out, bq.FINAL_RUNS[0], 1.0, bq.parse_args(["--work-size", "128"]), "reinhard")
    assert commands[1][2] == str(REPO / "models/hsynth/iSSAM_hsynth.py")
    assert commands[1][3:5] == ["--set", "work_size=128"]

    # a run that does not beat the candidate is not kept; one that does but is refused again is run2
    continued = {"card": "candidates/iSSAM_hsynth_run1.json", "weights": candidate.name}
    results = _results(bq, fmse=690.0, shared_fmse=450.0)
    results["runs"]["iSSAM"]["continued_from"] = continued
    _ship_fixture(hsynth, tmp_path, b"worse")
    bq.stage_ship(paths, results)
    assert sorted(p.name for p in candidate.parent.glob("*.pth")) == ["iSSAM_hsynth_run1.pth"]
    # ... and one that meets the rule ships with both runs in its card; the candidate stays
    results = _results(bq, fmse=600.0, shared_fmse=450.0, minutes=120)
    results["runs"]["iSSAM"]["continued_from"] = continued
    _ship_fixture(hsynth, tmp_path, b"run2")
    bq.stage_ship(paths, results)
    assert (paths.ship_dir / "iSSAM_hsynth.pth").read_bytes() == b"run2" and candidate.read_bytes() == b"run1"
    shipped = json.loads((paths.ship_dir / "iSSAM_hsynth.json").read_text())
    assert (shipped["total_minutes"], [h["hsynth_test_fmse"] for h in shipped["history"]]) == (165, [680.0, 600.0])
    assert bq.starting_card(paths, "iSSAM")[0] == Path("iSSAM_hsynth.json")  # the better of the two now


def test_a_candidate_file_that_exists_is_not_replaced(hsynth: Path, tmp_path: Path) -> None:
    bq, paths = _ship_fixture(hsynth, tmp_path, b"new")
    kept = paths.ship_dir / "candidates" / "iSSAM_hsynth_run1.pth"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"someone's")
    bq.stage_ship(paths, _results(bq, fmse=680.0, shared_fmse=450.0))
    assert kept.read_bytes() == b"someone's" and not kept.with_suffix(".json").exists()
