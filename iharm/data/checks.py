"""Check a dataset in the iHarmony4 layout and report every problem at once.

Training on a broken dataset fails hours in, at the first bad sample, with one
message. :func:`check_paths` instead reads every list and every image once and
collects all problems, with the same messages the training loader gives (it
uses :func:`iharm.data.io.read_image` / :func:`read_mask`). Severities:

* ``error``: the loader would fail or train on something else than meant:
  missing, unreadable or truncated files, composite/real/mask size mismatches,
  empty or full masks, duplicate list entries,
  entries that leave the dataset (``../``, absolute), an entry in both the train
  and the test list, a root ``IHD_*.txt`` that disagrees with the subset lists;
* ``warning``: loadable by iharm but suspicious, or fatal to the official loaders
  (blank lines, Windows line endings, spaces around an entry, images no list names);
* ``info``: worth knowing (soft or JPEG-noisy masks: iHarmony4's own HCOCO masks
  carry JPEG noise; no root ``IHD_*.txt`` lists).

The layout itself is described in :mod:`iharm.data.layout`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from iharm.data import layout
from iharm.data.errors import DataError
from iharm.data.io import IMAGE_EXTENSIONS, read_image, read_mask
from iharm.utils.metrics import FG_RATIO_BUCKETS, bucket_label, fg_bucket

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Problem:
    """One finding: its severity, the file (and list line) it is about, and what is wrong."""

    severity: str
    path: Path
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{self.severity.upper():7s} {where}: {self.message}"


@dataclass
class SubsetSummary:
    """What a subset holds: entries per split, image sizes, foreground-ratio buckets."""

    name: str
    entries: dict[str, int] = field(default_factory=dict)
    reals: int = 0
    masks: int = 0
    sizes: Counter = field(default_factory=Counter)  # (width, height) of composites
    fg_buckets: Counter = field(default_factory=Counter)
    soft_masks: int = 0


@dataclass
class CheckReport:
    """All problems and per-subset summaries of one or more checked folders."""

    problems: list[Problem] = field(default_factory=list)
    subsets: list[SubsetSummary] = field(default_factory=list)

    def add(self, severity: str, path: Path, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(severity, path, message, line))

    def count(self, severity: str) -> int:
        return sum(1 for p in self.problems if p.severity == severity)


def _read_list(path: Path, report: CheckReport) -> list[tuple[int, str]]:
    """(line number, entry) of a list file; reports encoding, line-ending and blank-line problems."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        report.add("error", path, f"cannot be read ({exc.strerror or exc})")
        return []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        report.add("error", path, f"not UTF-8 text (byte {exc.start})")
        return []
    crlf = text.count("\r\n")
    if crlf:
        report.add("warning", path, f"Windows line endings (CRLF) on {crlf} line(s): iharm reads them, the "
                   "official loaders do not; convert to LF (dos2unix)")
    entries = []
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if number == text.count("\n") + 1 and line == "":
            break  # the empty string after the final newline is not a line
        if not line.strip():
            report.add("warning", path, "blank line (iharm skips it, the official loaders fail on it)", number)
            continue
        if line != line.strip():
            report.add("warning", path, f"spaces around the entry {line!r}", number)
        entries.append((number, line.strip()))
    return entries


def _outside(entry: str) -> bool:
    pure = PurePosixPath(entry)
    return entry.startswith(("/", "\\")) or ".." in pure.parts or (len(entry) > 1 and entry[1] == ":")


class _SubsetChecker:
    """Checks one subset folder; images shared by several composites are read once."""

    def __init__(self, subset: Path, report: CheckReport) -> None:
        self.subset = subset
        self.report = report
        self.summary = SubsetSummary(subset.name)
        self.real_sizes: dict[str, tuple[int, int] | None] = {}
        self.mask_info: dict[str, tuple[tuple[int, int], float] | None] = {}
        self.lists: dict[str, set[str]] = {}
        self.soft: list[str] = []  # masks with values strictly between 0 and 255

    def run(self) -> SubsetSummary:
        missing = [sub for sub in layout.SUBFOLDERS if not (self.subset / sub).is_dir()]
        for sub in missing:
            self.report.add("error", self.subset / sub, "folder missing")
        for split in layout.SPLITS:
            self._check_list(split)
        both = self.lists.get("train", set()) & self.lists.get("test", set())
        if both:
            self.report.add("error", self.subset, f"{len(both)} composite(s) in both the train and the test list, "
                                                  f"e.g. {sorted(both)[:3]}")
        self._orphans()
        if self.soft:
            self.report.add("info", self.subset / "masks", f"{len(self.soft)} mask(s) not binary (values between 0 "
                            f"and 255: soft edges or JPEG noise), e.g. {sorted(self.soft)[:3]}")
        self.summary.soft_masks = len(self.soft)
        self.summary.reals = sum(1 for size in self.real_sizes.values() if size is not None)
        self.summary.masks = sum(1 for info in self.mask_info.values() if info is not None)
        return self.summary

    def _check_list(self, split: str) -> None:
        candidates = layout.split_lists(self.subset, split)
        if len(candidates) != 1:
            found = ", ".join(p.name for p in candidates)
            self.report.add("error", self.subset, f"several lists end with '{split}' ({found}): the loader needs one"
                            if candidates else f"no {split} list (expected {layout.list_path(self.subset, split).name})")
            return
        path = candidates[0]
        seen: dict[str, int] = {}
        for number, entry in _read_list(path, self.report):
            if _outside(entry) or "/" in entry or "\\" in entry:
                self.report.add("error", path, f"entry {entry!r} is not a plain file name in composite_images/"
                                + (" (it leaves the dataset)" if _outside(entry) else ""), number)
                continue
            if entry in seen:
                self.report.add("error", path, f"duplicate entry {entry!r} (first on line {seen[entry]})", number)
                continue
            seen[entry] = number
            self._check_sample(path, number, entry)
        self.lists[split] = set(seen)
        self.summary.entries[split] = len(seen)

    def _check_sample(self, list_file: Path, number: int, entry: str) -> None:
        if entry.count("_") < 2:
            self.report.add("error", list_file, f"entry {entry!r} is not named <real>_<mask>_<k>.<ext>", number)
            return
        composite_path = self.subset / "composite_images" / entry
        try:
            composite = read_image(composite_path)
        except DataError as exc:
            self.report.add("error", exc.path, f"{exc.message} (listed in {list_file.name}:{number})")
            composite = None
        real = self._real(layout.real_name(entry))
        mask = self._mask(layout.mask_name(entry))
        if composite is None:
            return
        size = (composite.shape[1], composite.shape[0])
        self.summary.sizes[size] += 1
        for what, other in (("real image", real), ("mask", None if mask is None else mask[0])):
            if other is not None and other != size:
                self.report.add("error", composite_path,
                                f"{size[0]}x{size[1]} but its {what} is {other[0]}x{other[1]}")
        if mask is not None:
            self.summary.fg_buckets[fg_bucket(mask[1])] += 1

    def _real(self, name: str) -> tuple[int, int] | None:
        if name not in self.real_sizes:
            try:
                image = read_image(self.subset / "real_images" / name)
                self.real_sizes[name] = (image.shape[1], image.shape[0])
            except DataError as exc:
                self.report.add("error", exc.path, exc.message)
                self.real_sizes[name] = None
        return self.real_sizes[name]

    def _mask(self, name: str) -> tuple[tuple[int, int], float] | None:
        if name not in self.mask_info:
            path = self.subset / "masks" / name
            try:
                mask = read_mask(path)
            except DataError as exc:
                self.report.add("error", exc.path, exc.message)
                self.mask_info[name] = None
                return None
            # Foreground = mask > 0.5, as iharm.utils.metrics.foreground_ratio buckets
            # images: JPEG noise (values 1..3 in the background) must neither make an
            # empty mask look non-empty nor a full one look partial.
            foreground = mask > 0.5
            ratio = float(np.count_nonzero(foreground)) / foreground.size
            if not foreground.any():
                self.report.add("error", path, "empty mask (no pixel above 127)")
            elif foreground.all():
                self.report.add("error", path, "full mask (no pixel at or below 127): nothing is background")
            if np.count_nonzero((mask > 0) & (mask < 1)):
                self.soft.append(name)
            self.mask_info[name] = ((mask.shape[1], mask.shape[0]), ratio)
        return self.mask_info[name]

    def _orphans(self) -> None:
        folder = self.subset / "composite_images"
        if not folder.is_dir():
            return
        listed = set().union(*self.lists.values()) if self.lists else set()
        orphans = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.name not in listed)
        if orphans:
            self.report.add("warning", folder, f"{len(orphans)} image(s) in no list, e.g. {orphans[:3]}")


def _check_root_lists(root: Path, subsets: dict[str, set[str]], report: CheckReport,
                      listed: dict[tuple[str, str], set[str]]) -> None:
    """Check ``IHD_<split>.txt`` against the subsets' own lists."""
    for split in layout.SPLITS:
        path = layout.root_list_path(root, split)
        if not path.is_file():
            report.add("info", path, "not present (BargainNet reads it; scripts/prepare_iharmony4.py writes it)")
            continue
        # Resized copies list their source's composites: the root lists name the source only.
        expected = {f"{name}/composite_images/{entry}" for name in subsets if not layout.is_resized_copy(name)
                    for entry in listed.get((name, split), set())}
        seen: dict[str, int] = {}
        for number, entry in _read_list(path, report):
            if _outside(entry):
                report.add("error", path, f"entry {entry!r} leaves the dataset root", number)
                continue
            if entry in seen:
                report.add("error", path, f"duplicate entry {entry!r} (first on line {seen[entry]})", number)
                continue
            seen[entry] = number
            if entry not in expected:
                parts = PurePosixPath(entry).parts
                why = (f"subset {parts[0]!r} is not in {root}" if parts[0] not in subsets
                       else f"not in {parts[0]}/{parts[0]}_{split}.txt")
                report.add("error", path, f"entry {entry!r}: {why}", number)
        absent = sorted(expected - set(seen))
        if absent:
            report.add("error", path, f"lacks {len(absent)} entr{'y' if len(absent) == 1 else 'ies'} of the subset "
                                      f"lists, e.g. {absent[:3]}")


def check_paths(paths: list[Path]) -> CheckReport:
    """Check each path: a subset folder (holds ``composite_images/``) or a root of subsets."""
    report = CheckReport()
    for path in paths:
        if not path.is_dir():
            report.add("error", path, "not a folder")
            continue
        if layout.is_subset_dir(path):
            checker = _SubsetChecker(path, report)
            report.subsets.append(checker.run())
            continue
        subsets = sorted(p for p in path.iterdir() if p.is_dir() and layout.is_subset_dir(p))
        if not subsets:
            report.add("error", path, "neither a subset (no composite_images/) nor a root of subsets")
            continue
        listed: dict[tuple[str, str], set[str]] = {}
        names: dict[str, set[str]] = {}
        for subset in subsets:
            checker = _SubsetChecker(subset, report)
            report.subsets.append(checker.run())
            names[subset.name] = set().union(*checker.lists.values()) if checker.lists else set()
            for split, entries in checker.lists.items():
                listed[(subset.name, split)] = entries
        _check_root_lists(path, names, report, listed)
    return report


def format_summary(report: CheckReport) -> str:
    """A human-readable summary: per subset, entries, images, sizes and foreground ratios."""
    lines = []
    for s in report.subsets:
        entries = ", ".join(f"{split} {count}" for split, count in s.entries.items()) or "no lists"
        lines.append(f"{s.name}: {entries} composites; {s.reals} real images, {s.masks} masks")
        if s.sizes:
            common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in s.sizes.most_common(3))
            lines.append(f"  composite sizes: {len(s.sizes)} distinct; most common {common}")
        total = sum(s.fg_buckets.values())
        if total:
            buckets = ", ".join(f"{label} {s.fg_buckets[label]} ({s.fg_buckets[label] / total:.0%})"
                                for label in map(bucket_label, FG_RATIO_BUCKETS))
            lines.append(f"  foreground ratio per composite, [low, high): {buckets}")
        if s.soft_masks:
            lines.append(f"  {s.soft_masks} mask(s) with values between 0 and 255 (soft edges or JPEG noise)")
    counts = ", ".join(f"{report.count(sev)} {sev}{'s' if report.count(sev) != 1 else ''}" for sev in SEVERITIES)
    lines.append(f"{counts}")
    return "\n".join(lines)
