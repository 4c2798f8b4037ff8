"""Build an iHarmony4-layout dataset (HSynth) from a folder of real photos.

The recipe is iHarmony4's: take a real photo, a foreground mask, and change the
foreground's appearance only; the photo is the ground truth, the changed photo
the composite. Steps:

1. find the photos (``*.jpg|png|...`` in the folder, ``<stem>_mask.png`` beside
   a photo is its own mask), read ``manifest.tsv`` if there is one (category:
   object or scene; group: near-duplicates);
2. split the photos into train and test BY GROUP, seeded, before generating
   anything: test composites use test photos and test references only;
3. per photo (in parallel; every photo has its own random generator derived
   from the global seed and its name, so the result does not depend on the
   worker count or order): write the real image, ``ceil(K/2)`` masks and K
   composites spread over them. Each composite draws a transform family and
   its parameters, and is redrawn (up to :data:`MAX_ATTEMPTS` times) while its
   change is imperceptible (fMSE < 100), absurd (fMSE > 6000) or shifts the
   foreground's mean hue by more than 15 degrees;
4. write ``<Name>_train.txt``, ``<Name>_test.txt`` and ``meta.tsv`` (one row a
   composite: source, split, mask kind, family and parameters, statistics).

Images are JPEG quality 95 (composites and reals), masks PNG, all written
byte-for-byte reproducibly for a given seed.
"""
from __future__ import annotations

import csv
import json
import math
import multiprocessing
import shutil
import zlib
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import cv2
import numpy as np
import torch

from iharm.data import layout
from iharm.data.errors import DataError
from iharm.data.hsynth import appearance, masks
from iharm.data.hsynth.imageops import JPEG_QUALITY, downscale_to_max_side
from iharm.data.hsynth.photos import MANIFEST_NAME, read_manifest
from iharm.data.hsynth.stats import composite_stats
from iharm.data.io import IMAGE_EXTENSIONS, read_image, read_mask
from iharm.utils.threads import thread_count

#: A composite is redrawn while its change falls outside these bounds (fMSE at 256 px)...
FMSE_RANGE = (100.0, 6000.0)
#: ...or moves the foreground's mean hue by more than this many degrees.
MAX_HUE_SHIFT = 15.0
MAX_ATTEMPTS = 25
#: Longest side of the copy of a reference photo that colour statistics are taken from.
REFERENCE_SIDE = 256
#: Probability of each mask kind by photo category (a given mask is used first when present).
MASK_KIND_WEIGHTS = {
    "object": {"object": 0.6, "region": 0.2, "blob": 0.1, "silhouette": 0.1},
    "scene": {"object": 0.1, "region": 0.7, "blob": 0.1, "silhouette": 0.1},
    "unknown": {"object": 0.35, "region": 0.45, "blob": 0.1, "silhouette": 0.1},
}
META_FIELDS = (
    "composite", "real", "mask", "source_photo", "split", "mask_kind", "mask_params", "family",
    "params", "seed", "attempts", "fg_ratio", "mse", "fmse", "psnr",
)
META_NAME = "meta.tsv"
_MASK_SUFFIX = "_mask"


@dataclass(frozen=True)
class Photo:
    """A source photo: its dataset name (no '_'), file, optional given mask, category and group."""

    name: str
    path: Path
    mask_path: Path | None = None
    category: str = "unknown"
    group: str = ""


@dataclass(frozen=True)
class BuildConfig:
    """What to build. ``max_side`` shrinks photos (LANCZOS4) before anything else; None keeps them."""

    name: str = "HSynth"
    seed: int = 0
    per_photo: int = 4
    test_fraction: float = 0.2
    workers: int = 2
    max_side: int | None = None
    #: Names of the photos that form the test split (e.g. the test photos of a model's
    #: training data, so that a new build never tests on a photo it saw); None: seeded split.
    test_photos: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or "\\" in self.name or self.name.startswith("."):
            raise ValueError(f"--name {self.name!r}: must be a plain folder name")
        if self.per_photo < 1:
            raise ValueError(f"--per-photo must be >= 1, got {self.per_photo}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"--test-fraction must lie in (0, 1), got {self.test_fraction}")
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.max_side is not None and self.max_side < 64:
            raise ValueError(f"--size must be >= 64, got {self.max_side}")


@dataclass
class BuildSummary:
    """Counts and per-composite rows of a build (rows in name order)."""

    rows: list[dict[str, str]] = field(default_factory=list)
    photos: dict[str, int] = field(default_factory=dict)  # split -> photo count
    dropped: list[str] = field(default_factory=list)  # composites with no acceptable draw


def _dataset_name(stem: str) -> str:
    """A photo stem as a real-image name: iHarmony4 splits names on '_', so no '_' (nor spaces)."""
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in stem).strip("-.")


def discover_photos(photos_dir: Path) -> list[Photo]:
    """The photos of ``photos_dir`` in name order, with given masks and manifest metadata."""
    if not photos_dir.is_dir():
        raise DataError(photos_dir, "photo folder not found")
    manifest = read_manifest(photos_dir / MANIFEST_NAME) if (photos_dir / MANIFEST_NAME).exists() else {}
    files = sorted(p for p in photos_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    masks_by_stem = {p.stem[:-len(_MASK_SUFFIX)]: p for p in files if p.stem.endswith(_MASK_SUFFIX)}
    photos: dict[str, Photo] = {}
    for path in files:
        if path.stem.endswith(_MASK_SUFFIX):
            if path.stem[:-len(_MASK_SUFFIX)] not in {p.stem for p in files}:
                raise DataError(path, "a mask without its photo (expected a photo named like it without '_mask')")
            continue
        name = _dataset_name(path.stem)
        if not name:
            raise DataError(path, "no usable name (letters, digits, '-' or '.') in the file name")
        if name in photos:
            raise DataError(path, f"has the same dataset name {name!r} as {photos[name].path.name}; rename one")
        meta = manifest.get(path.name, {})
        photos[name] = Photo(name, path, masks_by_stem.get(path.stem), meta.get("category", "unknown"),
                             meta.get("group") or name)
    if not photos:
        raise DataError(photos_dir, f"no photos ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
    return list(photos.values())


def split_photos(photos: list[Photo], test_fraction: float, seed: int,
                 test_photos: frozenset[str] | None = None) -> dict[str, str]:
    """{photo name: 'train' | 'test'}, about ``test_fraction`` of the photos in test.

    Whole groups go to one side (near-duplicates must not straddle the split);
    groups are shuffled with the seed and taken into test until the fraction is met.
    With ``test_photos`` exactly those photos are the test split (and the
    fraction and seed are not used); a group they would split is an error.
    A photo is named by its dataset name or by its file name (``test_photos.txt``
    of a shipped model lists the file names, ``meta.tsv``'s ``source_photo``).
    """
    groups: dict[str, list[str]] = {}
    for photo in photos:
        groups.setdefault(photo.group, []).append(photo.name)
    if test_photos is not None:
        split = {photo.name: "test" if {photo.name, photo.path.name} & test_photos else "train" for photo in photos}
        for group, names in groups.items():
            if len({split[name] for name in names}) > 1:
                raise ValueError(f"--test-photos splits the near-duplicate group {group!r} ({', '.join(names)})")
        if all(side == "test" for side in split.values()) or all(side == "train" for side in split.values()):
            raise ValueError("--test-photos leaves one split empty: it must name some but not all of the photos")
        return split
    order = sorted(groups)
    np.random.default_rng([seed, 1]).shuffle(order)
    wanted = max(1, round(test_fraction * len(photos)))
    split: dict[str, str] = {}
    in_test = 0
    for group in order:
        side = "test" if in_test < wanted else "train"
        for name in groups[group]:
            split[name] = side
        in_test += len(groups[group]) if side == "test" else 0
    if in_test == len(photos):
        raise ValueError(f"{len(photos)} photos in {len(groups)} groups leave no train photo; add photos")
    return split


def photo_rng(seed: int, name: str, *stream: int) -> np.random.Generator:
    """The generator of one photo: a function of the global seed and the photo's name only."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), *stream])


@dataclass(frozen=True)
class _Task:
    photo: Photo
    split: str
    references: tuple[Photo, ...]  # same split, other groups
    config: BuildConfig
    out: Path


def _load(photo_path: Path, max_side: int | None) -> np.ndarray:
    image = read_image(photo_path)
    return image if max_side is None else downscale_to_max_side(image, max_side)


@lru_cache(maxsize=32)
def _reference(path: Path) -> np.ndarray:
    """A small float copy of a reference photo (colour statistics need no detail)."""
    return downscale_to_max_side(read_image(path), REFERENCE_SIDE).astype(np.float32) / 255.0


@lru_cache(maxsize=32)
def silhouette_of(path: Path, seed: int, name: str) -> np.ndarray:
    """The object mask of a reference photo (GrabCut), to be reused as a shape elsewhere."""
    image = downscale_to_max_side(read_image(path), masks.WORK_SIDE)
    mask, _, _ = masks.make_mask(image, photo_rng(seed, name, 2), "object")
    return mask > 0


def _encode_jpeg(rgb: np.ndarray) -> tuple[bytes, np.ndarray]:
    """JPEG bytes of ``rgb`` and the image they decode to (what every reader will see)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return data.tobytes(), decoded


def _encode_png(mask: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", mask)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def given_mask(photo: Photo, shape: tuple[int, int]) -> np.ndarray:
    mask = read_mask(photo.mask_path)
    if mask.shape != shape:  # the photo may have been shrunk (--size): shrink its mask alike
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    binary = np.where(mask >= 0.5, 255, 0).astype(np.uint8)
    if not masks.area_ok(binary):
        raise DataError(photo.mask_path, f"foreground covers {np.mean(binary > 0):.1%}, outside {masks.ACCEPT_AREA}")
    return binary


def draw_mask_kind(rng: np.random.Generator, photo: Photo) -> str:
    """The kind of a new mask for ``photo``, drawn by its category (:data:`MASK_KIND_WEIGHTS`)."""
    kinds = MASK_KIND_WEIGHTS[photo.category if photo.category in MASK_KIND_WEIGHTS else "unknown"]
    return str(rng.choice(list(kinds), p=list(kinds.values())))


def draw_donor(rng: np.random.Generator, photo: Photo, donors: Sequence[Photo]) -> Photo:
    """The photo whose object mask a silhouette mask of ``photo`` reuses: one of ``donors``, the other
    photos of the same split (the photo itself when there is none)."""
    donors = donors or (photo,)
    return donors[int(rng.integers(len(donors)))]


def draw_mask(image: np.ndarray, rng: np.random.Generator, photo: Photo, donors: Sequence[Photo],
              silhouette: Callable[[Photo], np.ndarray]) -> tuple[np.ndarray, str, dict[str, Any]]:
    """A new mask for ``photo`` (uint8 RGB ``image``): its kind drawn by the photo's category, a
    silhouette being the object mask ``silhouette(donor)`` of a donor photo.

    Returns (uint8 0/255 mask, kind made, params).
    """
    kind = draw_mask_kind(rng, photo)
    donor = draw_donor(rng, photo, donors) if kind == "silhouette" else None
    mask, kind, params = masks.make_mask(image, rng, kind, None if donor is None else silhouette(donor))
    if donor is not None:
        params["donor"] = donor.name
    return mask, kind, params


def make_composite(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, references: Sequence[Photo],
                   reference_image: Callable[[Photo], np.ndarray] | None = None,
                   ) -> tuple[dict[str, Any], np.ndarray] | None:
    """Draw families until a composite passes the checks; (record, composite) or None.

    ``image`` is uint8 RGB, ``mask`` uint8 0/255; ``references`` are the photos a
    colour transfer may take its statistics from, and ``reference_image(photo)``
    their float RGB copy (default: read and shrink to :data:`REFERENCE_SIDE`, cached).
    """
    reference_image = reference_image or (lambda photo: _reference(photo.path))
    foreground = mask > 0
    base = image.astype(np.float32) / 255.0
    for attempt in range(1, MAX_ATTEMPTS + 1):
        family = appearance.choose_family(rng)
        reference = None
        params: dict[str, Any] = {}
        if family.needs_reference:
            if not references:
                continue  # a split with a single group has no reference photo: draw another family
            ref_photo = references[int(rng.integers(len(references)))]
            reference = reference_image(ref_photo)
            params["reference"] = ref_photo.name
        changed, drawn = family.apply(base, foreground, rng, reference)
        params.update(drawn)
        changed_u8 = np.clip(changed * 255.0 + 0.5, 0, 255).astype(np.uint8)
        composite = np.where(foreground[..., None], changed_u8, image)
        fmse = composite_stats(composite, image, mask)["fmse"]
        hue = appearance.mean_hue_shift(base, composite.astype(np.float32) / 255.0, foreground)
        if FMSE_RANGE[0] <= fmse <= FMSE_RANGE[1] and hue <= MAX_HUE_SHIFT:
            params["hue_shift"] = round(hue, 2)
            return {"family": family.name, "params": params, "attempts": attempt}, composite
    return None


def _build_photo(task: _Task) -> tuple[list[dict[str, str]], list[str]]:
    """Write one photo's real image, masks and composites; return (meta rows, dropped names)."""
    photo, config = task.photo, task.config
    root = task.out
    rng = photo_rng(config.seed, photo.name)
    image = _load(photo.path, config.max_side)
    real_bytes, real = _encode_jpeg(image)
    (root / "real_images" / f"{photo.name}.jpg").write_bytes(real_bytes)

    mask_count = math.ceil(config.per_photo / 2)
    rows, dropped = [], []
    for m in range(1, mask_count + 1):
        if m == 1 and photo.mask_path is not None:
            mask, kind, mask_params = given_mask(photo, image.shape[:2]), "given", {"file": photo.mask_path.name}
        else:
            mask, kind, mask_params = draw_mask(image, rng, photo, task.references,
                                                lambda donor: silhouette_of(donor.path, config.seed, donor.name))
        mask_file = f"{photo.name}_{m}.png"
        (root / "masks" / mask_file).write_bytes(_encode_png(mask))
        # Composites are numbered per mask; K composites are dealt round-robin over the masks.
        for k in range(1, len(range(m - 1, config.per_photo, mask_count)) + 1):
            name = layout.composite_name(photo.name, m, k)
            made = make_composite(image, mask, rng, task.references)
            if made is None:
                dropped.append(name)
                continue
            record, composite = made
            data, decoded = _encode_jpeg(composite)
            (root / "composite_images" / name).write_bytes(data)
            stats = composite_stats(decoded, real, mask)  # measured on what a reader decodes
            rows.append({
                "composite": name, "real": f"{photo.name}.jpg", "mask": mask_file,
                "source_photo": photo.path.name, "split": task.split, "mask_kind": kind,
                "mask_params": json.dumps(mask_params, sort_keys=True), "family": record["family"],
                "params": json.dumps(record["params"], sort_keys=True), "seed": str(config.seed),
                "attempts": str(record["attempts"]), "fg_ratio": f"{np.count_nonzero(mask) / mask.size:.5f}",
                "mse": f"{stats['mse']:.3f}", "fmse": f"{stats['fmse']:.3f}", "psnr": f"{stats['psnr']:.4f}",
            })
    return rows, dropped


def _init_worker() -> None:
    # One thread per process: the pool already uses the cores, and cv2's and
    # torch's own threads would only compete with it.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def build_dataset(photos_dir: Path, out_root: Path, config: BuildConfig, overwrite: bool = False,
                  progress: Callable[[Iterable, int], Iterable] | None = None) -> BuildSummary:
    """Build ``out_root/<config.name>`` from the photos in ``photos_dir``; return the summary.

    ``progress(iterable, total)`` may wrap the per-photo results (e.g. tqdm).
    An existing non-empty dataset folder is an error unless ``overwrite``, and
    then only a folder this builder made (it holds ``meta.tsv``) is replaced.
    The build goes to a hidden folder beside it first and replaces the old
    dataset only when it is complete: a failed or interrupted rebuild keeps it.
    """
    photos = discover_photos(photos_dir)
    split = split_photos(photos, config.test_fraction, config.seed, config.test_photos)
    target = out_root / config.name
    _check_target(photos_dir, target, overwrite)
    out = out_root / f".{config.name}.building"
    shutil.rmtree(out, ignore_errors=True)  # what an interrupted build of this name left
    for sub in layout.SUBFOLDERS:
        (out / sub).mkdir(parents=True, exist_ok=True)

    tasks = []
    for photo in photos:
        references = tuple(p for p in photos if split[p.name] == split[photo.name] and p.group != photo.group)
        tasks.append(_Task(photo, split[photo.name], references, config, out))
    summary = BuildSummary(photos={s: sum(1 for p in photos if split[p.name] == s) for s in layout.SPLITS})
    # One thread per build process (in this one with one worker): the pool already uses the cores.
    with ExitStack() as stack:
        if config.workers == 1:
            stack.enter_context(thread_count(1, opencv=True))
            results: Iterable = map(_build_photo, tasks)
        else:
            pool = multiprocessing.get_context("spawn").Pool(config.workers, initializer=_init_worker)
            stack.callback(pool.join)  # runs after close (last in, first out)
            stack.callback(pool.close)
            results = pool.imap(_build_photo, tasks, chunksize=1)
        for rows, dropped in (progress(results, len(tasks)) if progress else results):
            summary.rows.extend(rows)
            summary.dropped.extend(dropped)

    summary.rows.sort(key=lambda row: row["composite"])
    for name in layout.SPLITS:
        listed = [row["composite"] for row in summary.rows if row["split"] == name]
        (out / layout.list_path(target, name).name).write_text("".join(f"{c}\n" for c in listed))
    write_meta(out / META_NAME, summary.rows)
    _replace(out, target)
    return summary


def _check_target(photos_dir: Path, target: Path, overwrite: bool) -> None:
    """Refuse, before any work, a dataset folder that would delete or mix with the photos, and an
    ``--overwrite`` of a folder that is not one of our builds."""
    photos, resolved = photos_dir.resolve(), target.resolve()
    if resolved == photos or resolved in photos.parents:
        raise DataError(target, f"holds the photos folder {photos_dir}: building there would delete or mix with "
                                "the inputs; choose another --out or --name")
    if photos in resolved.parents:
        raise DataError(target, f"is inside the photos folder {photos_dir}: the dataset would mix with its inputs")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        if not overwrite:
            raise DataError(target, "exists and is not empty; pass --overwrite to replace it")
        if not (target / META_NAME).is_file():
            raise DataError(target, f"is not a dataset made by this builder (no {META_NAME}); --overwrite replaces "
                                    "only those: remove it yourself or choose another --name")


def _replace(built: Path, target: Path) -> None:
    """Put the finished build in place of ``target`` (two renames; the old dataset is removed last)."""
    old = target.with_name(f".{target.name}.replaced")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    built.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def write_meta(path: Path, rows: list[dict[str, str]]) -> None:
    """Write ``meta.tsv``: plain tab-separated values, no quoting (JSON cells hold no tabs)."""
    lines = ["\t".join(META_FIELDS)]
    for row in rows:
        cells = [row[key] for key in META_FIELDS]
        if any("\t" in cell or "\n" in cell for cell in cells):
            raise ValueError(f"a meta cell of {row['composite']} contains a tab or newline")
        lines.append("\t".join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_meta(path: Path) -> list[dict[str, str]]:
    """The rows of a ``meta.tsv`` written by :func:`write_meta`."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def summarize(rows: list[dict[str, str]], key: str | None = None) -> dict[str, dict[str, float]]:
    """Mean MSE / fMSE / PSNR and the count, overall (key None) or per value of ``key``."""
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault("all" if key is None else row[key], []).append(row)
    return {
        value: {"n": len(group), **{m: float(np.mean([float(r[m]) for r in group])) for m in ("mse", "fmse", "psnr")}}
        for value, group in sorted(groups.items())
    }
