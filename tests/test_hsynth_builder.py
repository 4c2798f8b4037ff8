"""Building HSynth from a handful of small real photos (scikit-image's, always installed)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from iharm.data.checks import check_paths
from iharm.data.errors import DataError
from iharm.data.hsynth import builder
from iharm.data.hsynth.builder import BuildConfig, Photo, build_dataset, discover_photos, read_meta, split_photos
from iharm.data.hsynth.photos import MANIFEST_FIELDS, write_manifest
from iharm.data.io import read_image, read_mask

REPO = Path(__file__).resolve().parents[1]
PHOTOS = {
    "scikit-astronaut": data.astronaut, "scikit-chelsea": data.chelsea, "scikit-coffee": data.coffee,
    "scikit-rocket": data.rocket, "scikit-motorcycle-left": lambda: data.stereo_motorcycle()[0],
    "scikit-motorcycle-right": lambda: data.stereo_motorcycle()[1], "scikit-retina": data.retina,
    "scikit-hubble": data.hubble_deep_field,
}
CONFIG = BuildConfig(name="HSynth", seed=0, per_photo=3, test_fraction=0.4, workers=2)


def write_photo_folder(folder: Path, side: int = 160) -> None:
    """Small JPEG photos, a manifest grouping the stereo pair, and one photo with its own mask."""
    folder.mkdir(parents=True)
    rows = []
    for name, load in PHOTOS.items():
        image = load()
        scale = side / max(image.shape[:2])
        small = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{name}.jpg"), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        row = {key: "" for key in MANIFEST_FIELDS}
        row.update(name=f"{name}.jpg", category="object",
                   group="motorcycle" if "motorcycle" in name else name)
        rows.append(row)
    write_manifest(folder / "manifest.tsv", rows)
    chelsea = cv2.imread(str(folder / "scikit-chelsea.jpg"))
    mask = np.zeros(chelsea.shape[:2], np.uint8)
    cv2.circle(mask, (chelsea.shape[1] // 2, chelsea.shape[0] // 2), chelsea.shape[0] // 4, 255, -1)
    cv2.imwrite(str(folder / "scikit-chelsea_mask.png"), mask)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, builder.BuildSummary]:
    root = tmp_path_factory.mktemp("hsynth")
    write_photo_folder(root / "photos")
    summary = build_dataset(root / "photos", root / "a", CONFIG)
    return root / "photos", root / "a" / "HSynth", summary


def _all_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_the_same_bytes_whatever_the_worker_count(built, tmp_path: Path) -> None:
    photos, dataset, _ = built
    build_dataset(photos, tmp_path, BuildConfig(**{**CONFIG.__dict__, "workers": 1}))
    first, second = _all_files(dataset), _all_files(tmp_path / "HSynth")
    assert sorted(first) == sorted(second)
    assert all(first[name] == second[name] for name in first), "a file differs between the two builds"


def test_layout_is_the_one_hdataset_reads(built) -> None:
    _, dataset, summary = built
    assert sorted(p.name for p in dataset.iterdir()) == sorted(
        ["composite_images", "masks", "real_images", "HSynth_train.txt", "HSynth_test.txt", "meta.tsv"])
    listed = []
    for split in ("train", "test"):
        entries = (dataset / f"HSynth_{split}.txt").read_text().splitlines()
        assert entries == sorted(entries) and len(entries) == len(set(entries))
        listed += entries
    assert sorted(listed) == sorted(p.name for p in (dataset / "composite_images").iterdir())
    assert len(listed) == len(PHOTOS) * CONFIG.per_photo - len(summary.dropped)
    for name in listed:
        # iSSAM's HDataset.get_sample, written out independently.
        real = name.split("_")[0] + ".jpg"
        mask = "_".join(name.split("_")[:-1]) + ".png"
        assert (dataset / "real_images" / real).is_file() and (dataset / "masks" / mask).is_file()
        shapes = {read_image(dataset / "composite_images" / name).shape[:2],
                  read_image(dataset / "real_images" / real).shape[:2], read_mask(dataset / "masks" / mask).shape}
        assert len(shapes) == 1
    report = check_paths([dataset])
    assert report.count("error") == 0 and report.count("warning") == 0, [str(p) for p in report.problems]


def test_split_is_by_photo_and_group_and_test_uses_test_photos_only(built) -> None:
    _, dataset, _ = built
    rows = read_meta(dataset / "meta.tsv")
    split_of = {}
    for row in rows:
        photo = row["real"][:-4]
        assert split_of.setdefault(photo, row["split"]) == row["split"]
    assert split_of["scikit-motorcycle-left"] == split_of["scikit-motorcycle-right"]
    assert set(split_of.values()) == {"train", "test"}
    for row in rows:
        params, mask_params = json.loads(row["params"]), json.loads(row["mask_params"])
        for other in (params.get("reference"), mask_params.get("donor")):
            if other is not None:
                assert split_of[other] == row["split"], f"{row['composite']} used {other} from the other split"
                assert other != row["real"][:-4]


def _independent_stats(composite: np.ndarray, real: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    size = (256, 256)
    c = cv2.resize(composite, size, interpolation=cv2.INTER_LINEAR).astype(np.float64)
    r = cv2.resize(real, size, interpolation=cv2.INTER_LINEAR).astype(np.float64)
    m = cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR).astype(np.float64)
    squared = ((c - r) ** 2).sum(axis=2)
    mse = squared.sum() / squared.size / 3
    fmse = (squared * m).sum() / (3 * m.sum() + 1e-6)
    return mse, fmse, 10 * np.log10(r.max() ** 2 / (mse + 1e-6))


def test_meta_records_each_composite_and_its_statistics(built) -> None:
    _, dataset, _ = built
    rows = read_meta(dataset / "meta.tsv")
    families = {f.name for f in builder.appearance.FAMILIES}
    for row in rows:
        assert row["family"] in families and row["seed"] == "0"
        composite = read_image(dataset / "composite_images" / row["composite"])
        real = read_image(dataset / "real_images" / row["real"])
        mask = read_mask(dataset / "masks" / row["mask"])
        mse, fmse, psnr = _independent_stats(composite, real, mask)
        assert float(row["mse"]) == pytest.approx(mse, rel=1e-3, abs=1e-3)
        assert float(row["fmse"]) == pytest.approx(fmse, rel=1e-3)
        assert float(row["psnr"]) == pytest.approx(psnr, abs=1e-3)
        assert float(row["fg_ratio"]) == pytest.approx(mask.mean(), abs=1e-4)
        # Accepted changes are perceptible but not absurd (checked before JPEG, so allow its noise).
        assert 80 <= fmse <= 6200
        # Only the foreground changed: far from the mask, composite and real agree up to JPEG noise.
        far = cv2.erode((mask < 0.5).astype(np.uint8), np.ones((17, 17), np.uint8)) > 0
        if far.any():
            assert np.abs(composite[far].astype(float) - real[far]).mean() < 1.5


def test_a_mask_beside_a_photo_is_its_first_mask(built) -> None:
    photos, dataset, _ = built
    given = cv2.imread(str(photos / "scikit-chelsea_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(cv2.imread(str(dataset / "masks" / "scikit-chelsea_1.png"), cv2.IMREAD_GRAYSCALE), given)
    kinds = {row["mask"]: row["mask_kind"] for row in read_meta(dataset / "meta.tsv")}
    assert kinds["scikit-chelsea_1.png"] == "given"


def test_split_photos_keeps_groups_whole_and_follows_the_seed() -> None:
    photos = [Photo(f"p{i}", Path(f"p{i}.jpg"), group=f"g{i // 2}") for i in range(20)]
    split = split_photos(photos, 0.3, seed=0)
    assert split == split_photos(photos, 0.3, seed=0)
    assert split != split_photos(photos, 0.3, seed=1)
    assert sum(side == "test" for side in split.values()) == 6
    for i in range(0, 20, 2):
        assert split[f"p{i}"] == split[f"p{i + 1}"]


def test_photo_discovery_names_and_errors(tmp_path: Path) -> None:
    image = np.full((20, 30, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "my_photo 1.jpg"), image)
    cv2.imwrite(str(tmp_path / "my_photo 1_mask.png"), image[:, :, 0])
    (photo,) = discover_photos(tmp_path)
    assert photo.name == "my-photo-1" and photo.mask_path.name == "my_photo 1_mask.png"
    cv2.imwrite(str(tmp_path / "my-photo-1.png"), image)
    with pytest.raises(DataError, match="same dataset name 'my-photo-1'"):
        discover_photos(tmp_path)
    (tmp_path / "my-photo-1.png").unlink()
    cv2.imwrite(str(tmp_path / "lonely_mask.png"), image[:, :, 0])
    with pytest.raises(DataError, match="lonely_mask.png: a mask without its photo"):
        discover_photos(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no photos"):
        discover_photos(tmp_path / "empty")
    with pytest.raises(ValueError, match="--per-photo"):
        BuildConfig(per_photo=0)


def test_existing_output_is_not_overwritten_silently(built, tmp_path: Path) -> None:
    photos, _, _ = built
    (tmp_path / "HSynth").mkdir()
    (tmp_path / "HSynth" / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not empty; pass --overwrite"):
        build_dataset(photos, tmp_path, CONFIG)


def test_cli_builds_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_photo_folder(tmp_path / "photos", side=96)
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import make_synthetic_dataset as script
    finally:
        sys.path.remove(str(REPO / "scripts"))
    code = script.main(["--photos", str(tmp_path / "photos"), "--out", str(tmp_path / "ds"), "--per-photo", "1",
                        "--workers", "1", "--test-fraction", "0.3", "--contact-sheet", str(tmp_path / "sheet.jpg")])
    out = capsys.readouterr().out
    assert code == 0 and "8 composites" in out and "family" in out
    assert 0 < (tmp_path / "sheet.jpg").stat().st_size < 400_000


def test_the_builder_never_deletes_its_photos_or_a_foreign_folder(tmp_path: Path) -> None:
    photos = tmp_path / "datasets" / "HSynth" / "photos"
    write_photo_folder(photos)
    before = _all_files(tmp_path)
    for root, name in ((tmp_path / "datasets", "HSynth"), (photos.parent, "photos"), (photos, "inside")):
        with pytest.raises(DataError, match="photos folder"):
            build_dataset(photos, root, BuildConfig(**{**CONFIG.__dict__, "name": name}), overwrite=True)
    foreign = tmp_path / "mine" / "HSynth"
    foreign.mkdir(parents=True)
    (foreign / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match="not a dataset made by this builder"):
        build_dataset(photos, tmp_path / "mine", CONFIG, overwrite=True)
    assert _all_files(tmp_path) == {**before, "mine/HSynth/thesis.tex": b"years of work"}


def test_a_failed_rebuild_keeps_the_old_dataset(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos, _, _ = built
    build_dataset(photos, tmp_path, BuildConfig(**{**CONFIG.__dict__, "workers": 1}))
    old = _all_files(tmp_path / "HSynth")
    calls = []

    def failing(task):
        calls.append(task)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real(task)

    real = builder._build_photo
    monkeypatch.setattr(builder, "_build_photo", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_dataset(photos, tmp_path, BuildConfig(**{**CONFIG.__dict__, "workers": 1, "seed": 5}), overwrite=True)
    assert _all_files(tmp_path / "HSynth") == old
    monkeypatch.undo()
    build_dataset(photos, tmp_path, BuildConfig(**{**CONFIG.__dict__, "workers": 1, "seed": 5}), overwrite=True)
    assert _all_files(tmp_path / "HSynth") != old and sorted(p.name for p in tmp_path.iterdir()) == ["HSynth"]
