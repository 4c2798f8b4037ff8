"""check_dataset: every planted fault is reported in one run; clean data passes."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from iharm.data.checks import check_paths
from iharm.data.hsynth.builder import BuildConfig, build_dataset
from iharm.data.prepare import write_root_lists
from iharm.utils.metrics import fg_bucket
from test_hsynth_builder import write_photo_folder

REPO = Path(__file__).resolve().parents[1]


def _script():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import check_dataset
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return check_dataset


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated dataset under a root with IHD lists: the copy each test spoils."""
    base = tmp_path_factory.mktemp("check")
    write_photo_folder(base / "photos", side=96)
    build_dataset(base / "photos", base / "root", BuildConfig(per_photo=2, test_fraction=0.4, workers=1))
    write_root_lists(base / "root")
    return base / "root"


def test_clean_dataset_passes(clean_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = check_paths([clean_root])
    assert [p for p in report.problems if p.severity != "info"] == []
    assert _script().main([str(clean_root)]) == 0
    out = capsys.readouterr().out
    assert "HSynth: train" in out and "0 errors" in out


def test_every_planted_fault_is_reported(clean_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    shutil.copytree(clean_root, root)
    sub = root / "HSynth"
    train_list, test_list = sub / "HSynth_train.txt", sub / "HSynth_test.txt"
    train = train_list.read_text().splitlines()
    test = test_list.read_text().splitlines()
    composites = sub / "composite_images"

    # Distinct photos for the image faults, so that one fault does not hide another.
    by_real: dict[str, list[str]] = {}
    for entry in train + test:
        by_real.setdefault(entry.split("_")[0], []).append(entry)
    reals = sorted(by_real)
    missing, corrupt, truncated, resized, soft, empty, full = (by_real[r][0] for r in reals[:7])
    (composites / missing).unlink()
    (sub / "real_images" / f"{corrupt.split('_')[0]}.jpg").write_bytes(b"\xff\xd8 not really a JPEG \xff\xd9")
    data = (composites / truncated).read_bytes()
    (composites / truncated).write_bytes(data[: len(data) // 2])
    mask_of = lambda entry: sub / "masks" / ("_".join(entry.split("_")[:-1]) + ".png")  # noqa: E731
    small = cv2.imread(str(mask_of(resized)), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(mask_of(resized)), cv2.resize(small, (small.shape[1] // 2, small.shape[0] // 2)))
    soft_mask = cv2.imread(str(mask_of(soft)), cv2.IMREAD_GRAYSCALE)
    soft_mask[soft_mask == 255] = 200
    soft_mask[0, 0] = 255
    cv2.imwrite(str(mask_of(soft)), soft_mask)
    cv2.imwrite(str(mask_of(empty)), np.zeros_like(cv2.imread(str(mask_of(empty)), cv2.IMREAD_GRAYSCALE)))
    cv2.imwrite(str(mask_of(full)), np.full_like(cv2.imread(str(mask_of(full)), cv2.IMREAD_GRAYSCALE), 255))
    orphan = "stray_1_1.jpg"
    shutil.copyfile(composites / test[-1], composites / orphan)

    # List faults: CRLF, a blank line, a duplicate, entries leaving the dataset, spaces,
    # a badly named entry, and a test composite also listed for training.
    train_lines = train + ["", train[1], "../escape_1_1.jpg", "/abs/path_1_1.jpg", f" {train[2]} ",
                           "noseparator.jpg", test[0]]
    train_list.write_bytes("\r\n".join(train_lines).encode() + b"\r\n")
    # Root list faults: an unknown subset, a line that escapes, and missing entries.
    ihd = root / "IHD_test.txt"
    ihd_lines = ihd.read_text().splitlines()[1:] + ["Other/composite_images/x_1_1.jpg", "../HSynth/composite_images/y_1_1.jpg"]
    ihd.write_text("\n".join(ihd_lines) + "\n")

    report = check_paths([root])
    found = [str(p) for p in report.problems]

    def reported(severity: str, *needles: str) -> None:
        hits = [line for line in found if line.startswith(severity.upper()) and all(n in line for n in needles)]
        assert hits, f"not reported: {severity} {needles}\n" + "\n".join(found)

    reported("error", missing, "file not found")
    reported("error", f"{corrupt.split('_')[0]}.jpg", "not a decodable image")
    reported("error", truncated, "truncated JPEG")
    reported("error", resized, "but its mask is")
    reported("info", "not binary", mask_of(soft).name)
    reported("error", mask_of(empty).name, "empty mask")
    reported("error", mask_of(full).name, "full mask")
    reported("warning", "1 image(s) in no list", orphan)
    reported("warning", "HSynth_train.txt", "Windows line endings")
    reported("warning", "HSynth_train.txt", "blank line")
    reported("error", "HSynth_train.txt", "duplicate entry", train[1])
    reported("error", "HSynth_train.txt", "../escape_1_1.jpg", "leaves the dataset")
    reported("error", "HSynth_train.txt", "/abs/path_1_1.jpg", "leaves the dataset")
    reported("warning", "HSynth_train.txt", "spaces around")
    reported("error", "HSynth_train.txt", "noseparator.jpg", "not named <real>_<mask>_<k>")
    reported("error", "in both the train and the test list")
    reported("error", "IHD_test.txt", "subset 'Other' is not in")
    reported("error", "IHD_test.txt", "leaves the dataset root")
    reported("error", "IHD_test.txt", "lacks 1 entry")
    # Line numbers point at the list line.
    blank_line = len(train) + 1
    assert any(f"HSynth_train.txt:{blank_line}: blank line" in line for line in found)

    assert _script().main([str(root)]) == 1
    assert "errors" in capsys.readouterr().out


def test_subset_folder_and_missing_pieces(tmp_path: Path) -> None:
    (tmp_path / "Sub" / "composite_images").mkdir(parents=True)
    report = check_paths([tmp_path / "Sub", tmp_path / "nowhere", tmp_path / "Sub" / "composite_images"])
    found = [str(p) for p in report.problems]
    assert any("masks: folder missing" in line for line in found)
    assert any("no train list (expected Sub_train.txt)" in line for line in found)
    assert any("nowhere: not a folder" in line for line in found)
    assert any("neither a subset" in line for line in found)
    (tmp_path / "Sub" / "Sub_train.txt").write_text("")
    (tmp_path / "Sub" / "old_train.txt").write_text("")
    report = check_paths([tmp_path / "Sub"])
    assert any("several lists end with 'train'" in str(p) for p in report.problems)


def test_foreground_buckets_are_half_open() -> None:
    assert fg_bucket(0.0) == "0%-5%"
    assert fg_bucket(0.0499) == "0%-5%"
    assert fg_bucket(0.05) == "5%-15%"
    assert fg_bucket(0.15) == "15%-100%"
    assert fg_bucket(1.0) == "15%-100%"


def test_shared_iharmony4_mini_passes_with_its_two_subsets(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = shared_data / "iharmony4_mini"
    report = check_paths([root])
    assert report.count("error") == 0 and report.count("warning") == 0, [str(p) for p in report.problems]
    assert sorted(s.name for s in report.subsets) == ["HAdobe5k", "HCOCO"]
    coco = next(s for s in report.subsets if s.name == "HCOCO")
    assert coco.entries == {"train": 0, "test": 4} and coco.soft_masks == 1  # its mask was a JPEG
    assert _script().main([str(root)]) == 0
