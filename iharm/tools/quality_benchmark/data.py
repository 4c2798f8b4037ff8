"""Stage ``data``: the photo pool, HSynth, its working copies, and the real files of ``--shared-data``."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2

from iharm.data import layout
from iharm.data.hsynth.builder import META_NAME
from iharm.data.hsynth.imageops import write_png
from iharm.data.hsynth.subsets import write_working_copy
from iharm.data.io import encode_image, read_image, read_mask, write_encoded
from iharm.tools.quality import mask_to_uint8
from iharm.tools.quality_benchmark.common import HSYNTH_BUILD, PYTHON, WORK_COPY_SIZE, Paths, log, run_command


def stage_data(paths: Paths, held_out_family: str) -> None:
    if not (paths.hsynth / META_NAME).is_file():
        if not any(paths.photos.glob("*.jpg")):
            run_command([PYTHON, "scripts/fetch_photos.py", "--out", paths.photos])
        run_command([PYTHON, "scripts/make_synthetic_dataset.py", "--photos", paths.photos,
                     "--out", paths.hsynth.parent, "--name", paths.hsynth.name,
                     "--seed", HSYNTH_BUILD["seed"], "--per-photo", HSYNTH_BUILD["per_photo"],
                     "--test-fraction", HSYNTH_BUILD["test_fraction"], "--workers", 2])
    for family in (None, held_out_family):
        count = write_working_copy(paths.hsynth, paths.work_copy(family), WORK_COPY_SIZE,
                                   exclude_families=(family,) if family else ())
        log(f"working copy {paths.work_copy(family)}: {count} training composites")
    write_shared_gt_layout(paths.shared_data, paths.shared_gt)
    paths.config.write_text(f"EXPS_PATH: {paths.out / 'exps'}\nMODELS_PATH: {paths.out / 'exps'}\n"
                            f"PHOTOS_PATH: {paths.photos}\nHSYNTH_PATH: {paths.hsynth}\n")


#: Real triplets of ``--shared-data`` that are not in the iHarmony4 layout: (folder, name, composite, mask, real).
SHARED_TRIPLETS = (
    ("INR2k", "inr", "triplets/inr_2k/demo_2k_composite.jpg", "triplets/inr_2k/demo_2k_mask.jpg",
     "triplets/inr_2k/demo_2k_real.jpg"),
    *(("RainNet256", f"rainnet{i}", f"triplets/rainnet_256/{i}.png", f"triplets/rainnet_256/{i}-mask.png",
       f"triplets/rainnet_256/{i}-gt.png") for i in (1, 2, 3)),
)
#: Folders of ``--shared-data`` already in the iHarmony4 layout.
SHARED_IHARMONY4 = ("iharmony4_mini/HAdobe5k", "iharmony4_mini/HCOCO")
#: Real composites without ground truth: (name, composite, mask).
SHARED_NO_GT = (
    *((f"harmonizer_{n}", f"composites_no_gt/composite_{n}_1.jpg", f"composites_no_gt/mask_{n}_1.jpg")
      for n in ("a0196", "f636", "f855")),
    *((f"bargainnet_{i}", f"composites_no_gt/bargainnet_example_{i}.png",
       f"composites_no_gt/bargainnet_example_{i}_mask.png") for i in (1, 2)),
)


def write_shared_gt_layout(shared_data: Path, dest: Path) -> None:
    """The shared triplets in the iHarmony4 layout, so that ``evaluate_model.py`` scores them.

    JPEG files are copied byte for byte; PNG composites and ground truths
    (RainNet, some RGBA) are decoded as the loader decodes them and stored as
    JPEG quality 100 with 4:4:4 chroma (every row, Composite included, then
    sees the same pixels); masks are stored as decoded, as PNG.
    """
    written: set[str] = set()
    for folder, name, composite, mask, real in SHARED_TRIPLETS:
        if not all((shared_data / f).is_file() for f in (composite, mask, real)):
            log(f"{shared_data / composite} (or its mask or real image) not found: left out")
            continue
        written.add(folder)
        subset = dest / folder
        composite_name = layout.composite_name(name, 1, 1)
        for kind, source, target in (("composite_images", composite, composite_name),
                                     ("real_images", real, layout.real_name(composite_name))):
            path = subset / kind / target
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if source.endswith(".jpg"):
                shutil.copyfile(shared_data / source, path)
            else:
                write_encoded(path, encode_image(path, read_image(shared_data / source),
                                                 [cv2.IMWRITE_JPEG_QUALITY, 100, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]))
        mask_path = subset / "masks" / layout.mask_name(composite_name)
        if not mask_path.exists():
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            write_png(mask_path, mask_to_uint8(read_mask(shared_data / mask)))
    for folder in written:
        names = sorted(p.name for p in (dest / folder / "composite_images").iterdir())
        layout.list_path(dest / folder, "test").write_text("".join(f"{n}\n" for n in names))


def no_gt_inputs(shared_data: Path) -> list[tuple[str, str, str]]:
    """The entries of SHARED_NO_GT whose files exist."""
    return [entry for entry in SHARED_NO_GT if all((shared_data / f).is_file() for f in entry[1:])]


def shared_gt_folders(paths: Paths) -> list[Path]:
    folders = [paths.shared_data / f for f in SHARED_IHARMONY4] + \
              [paths.shared_gt / f for f in dict.fromkeys(t[0] for t in SHARED_TRIPLETS)]
    return [f for f in folders if f.is_dir()]
