"""prepare_iharmony4: IHD root lists and the resized HAdobe5k copy, on a fake layout made
from real photos and on the shared iHarmony4 sample (a 2832x4256 HAdobe5k triplet)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from iharm.data.checks import check_paths
from iharm.data.errors import DataError
from iharm.data.prepare import resize_subset, write_root_lists

REPO = Path(__file__).resolve().parents[1]


def _script():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import prepare_iharmony4
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return prepare_iharmony4


def _subset(root: Path, name: str, photos: dict[str, np.ndarray], train: list[str], test: list[str]) -> None:
    """A subset with one mask and two composites per real photo (the composite is a darker copy)."""
    for sub in ("composite_images", "masks", "real_images"):
        (root / name / sub).mkdir(parents=True)
    for real, image in photos.items():
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(root / name / "real_images" / f"{real}.jpg"), bgr)
        mask = np.zeros(image.shape[:2], np.uint8)
        mask[image.shape[0] // 4: image.shape[0] // 2, image.shape[1] // 4: image.shape[1] // 2] = 255
        cv2.imwrite(str(root / name / "masks" / f"{real}_1.png"), mask)
        for k in (1, 2):
            cv2.imwrite(str(root / name / "composite_images" / f"{real}_1_{k}.jpg"), (bgr * (0.6 + 0.2 * k)).astype(np.uint8))
    (root / name / f"{name}_train.txt").write_text("".join(f"{e}\n" for e in train))
    (root / name / f"{name}_test.txt").write_text("".join(f"{e}\n" for e in test))


@pytest.fixture()
def fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "iHarmony4"
    _subset(root, "HAdobe5k", {"a1": data.astronaut(), "a2": data.coffee()[:, :300]},
            ["a1_1_1.jpg", "a1_1_2.jpg", "a2_1_1.jpg"], ["a2_1_2.jpg"])
    _subset(root, "HCOCO", {"c1": data.chelsea()}, ["c1_1_2.jpg"], ["c1_1_1.jpg"])
    return root


def test_root_lists_join_the_subset_lists(fake_root: Path) -> None:
    assert write_root_lists(fake_root) == {"train": 4, "test": 2}
    assert (fake_root / "IHD_train.txt").read_text() == (
        "HAdobe5k/composite_images/a1_1_1.jpg\nHAdobe5k/composite_images/a1_1_2.jpg\n"
        "HAdobe5k/composite_images/a2_1_1.jpg\nHCOCO/composite_images/c1_1_2.jpg\n")
    assert (fake_root / "IHD_test.txt").read_text() == (
        "HAdobe5k/composite_images/a2_1_2.jpg\nHCOCO/composite_images/c1_1_1.jpg\n")
    report = check_paths([fake_root])
    assert report.count("error") == 0, [str(p) for p in report.problems]
    assert write_root_lists(fake_root) == {"train": 4, "test": 2}  # the same lists again: fine


def test_other_root_lists_are_never_replaced(fake_root: Path) -> None:
    official = "HCOCO/composite_images/c9_9_9.jpg\n"
    (fake_root / "IHD_test.txt").write_text(official)
    with pytest.raises(DataError, match=r"IHD_test\.txt: exists with other entries"):
        write_root_lists(fake_root)
    assert (fake_root / "IHD_test.txt").read_text() == official
    assert not (fake_root / "IHD_train.txt").exists()  # nothing written when one list is refused


def test_resized_copy_follows_the_notebook(fake_root: Path) -> None:
    source, target = fake_root / "HAdobe5k", fake_root / "HAdobe5k_resized256"
    counts = resize_subset(source, target, max_side=256, workers=1)
    # a1 (512x512): three JPEGs and a PNG mask resized; a2 (300x400 -> longest 400) too.
    assert counts == {"resized": 8, "copied": 0, "lists": 2}
    for path in sorted(source.rglob("*")):
        if path.suffix not in (".jpg", ".png"):
            continue
        original = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        height, width = original.shape[:2]
        scale = 256 / max(height, width)
        expected = (256, round(scale * height)) if width >= height else (round(scale * width), 256)
        out = cv2.imread(str(target / path.relative_to(source)), cv2.IMREAD_UNCHANGED)
        assert (out.shape[1], out.shape[0]) == expected, path.name
        resized = cv2.resize(original, expected, interpolation=cv2.INTER_LANCZOS4)
        if path.suffix == ".png":  # lossless: exactly the LANCZOS4 resize, soft edges included
            assert np.array_equal(out, resized)
            assert len(np.unique(out)) > 2
        else:  # quality 90
            encoded = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
            assert (target / path.relative_to(source)).read_bytes() == encoded.tobytes()
    assert (target / "HAdobe5k_train.txt").read_bytes() == (source / "HAdobe5k_train.txt").read_bytes()
    # The resized copy is a valid subset, and the root lists leave it out (it duplicates HAdobe5k).
    write_root_lists(fake_root)
    assert "resized" not in (fake_root / "IHD_train.txt").read_text()
    report = check_paths([fake_root])
    assert report.count("error") == 0, [str(p) for p in report.problems]
    with pytest.raises(DataError, match="already exists"):
        resize_subset(source, target, max_side=256, workers=1)


def test_small_files_are_copied_unchanged(fake_root: Path) -> None:
    target = fake_root / "HAdobe5k_resized1024"
    assert resize_subset(fake_root / "HAdobe5k", target, max_side=1024, workers=2)["copied"] == 8
    for path in (fake_root / "HAdobe5k").rglob("*.jpg"):
        assert (target / path.relative_to(fake_root / "HAdobe5k")).read_bytes() == path.read_bytes()


def test_shared_hadobe5k_sample_is_resized_to_the_exact_size(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "mini"
    shutil.copytree(shared_data / "iharmony4_mini", root)
    (root / "IHD_test.txt").unlink()
    assert _script().main([str(root), "--resize-hadobe5k", "--workers", "1"]) == 0
    real = cv2.imread(str(root / "HAdobe5k_resized1024" / "real_images" / "a0002.jpg"))
    mask = cv2.imread(str(root / "HAdobe5k_resized1024" / "masks" / "a0002_1.png"), cv2.IMREAD_UNCHANGED)
    # 2832 wide, 4256 high: the height becomes 1024, the width round(1024 / 4256 * 2832) = 681.
    assert real.shape[:2] == mask.shape[:2] == (1024, round(1024 / 4256 * 2832)) == (1024, 681)
    assert mask.shape[2] == 3  # IMREAD_UNCHANGED keeps the stored channels, as the notebook did
    # The rewritten root list equals the one shipped with the sample.
    assert (root / "IHD_test.txt").read_text() == (shared_data / "iharmony4_mini" / "IHD_test.txt").read_text()
    report = check_paths([root])
    assert report.count("error") == 0 and len(report.subsets) == 3


def test_bad_lists_are_refused_with_the_line(fake_root: Path) -> None:
    (fake_root / "HCOCO" / "HCOCO_train.txt").write_text("c1_1_2.jpg\n\nc1_1_1.jpg\n")
    with pytest.raises(DataError, match=r"HCOCO_train.txt:2: blank line"):
        write_root_lists(fake_root)
    assert _script().main([str(fake_root)]) == 1
