"""Stage ``report``: docs/quality.md, its figures, and ``results.json`` with every number in it."""
from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iharm.data import layout
from iharm.data.hdataset import HDataset
from iharm.data.hsynth.builder import META_NAME, read_meta
from iharm.data.hsynth.subsets import family_of
from iharm.data.io import read_image
from iharm.data.transforms import HCompose, resize_transform
from iharm.inference.predictor import COMPOSITE
from iharm.tools.quality import (grouped_summaries, line_plot, markdown_table, mask_to_uint8, read_per_image_csv,
                                 result_grid, with_ratio, write_small_jpeg)
from iharm.tools.quality_benchmark.common import (ABLATIONS, COLUMNS, EVAL_STRATEGY, FINAL_RUNS, HELD_OUT_RUN,
                                                  HSYNTH_BUILD, PYTHON, RATIO, WORK_COPY_SIZE, Paths, Run,
                                                  experiment_dir, log, read_json, relative, write_json)
from iharm.tools.quality_benchmark.cards import final_source, shipped_card
from iharm.tools.quality_benchmark.data import no_gt_inputs, shared_gt_folders
from iharm.tools.quality_benchmark.evaluation import checkpoints_of, fixed_size_inputs, load_no_gt_pair
from iharm.utils.metrics import FG_RATIO_BUCKETS, bucket_label, in_bucket


def final_names(paths: Paths) -> dict[str, str]:
    """{model: evaluation name} of the final runs' models that have a row: their run here, or their shipped
    weights (:func:`final_source`), in the order of FINAL_RUNS."""
    return {run.model: source[0] for run in FINAL_RUNS if (source := final_source(paths, run)) is not None}


def hsynth_results(paths: Paths, name: str, stem: str = "final") -> list:
    folder = paths.eval_dir("hsynth", name) if name == COMPOSITE else paths.eval_dir("hsynth", name, stem)
    csv_path = folder / "per_image.csv"
    return read_per_image_csv(csv_path) if csv_path.is_file() else []


def table_rows(by_model: Mapping[str, list], group_of: Any, order: Sequence[str] | None,
               composite: list) -> dict[str, dict[str, float]]:
    """Rows ``'<group>: <model>'`` with the fMSE ratio to the Composite row of the same group."""
    composite_groups = grouped_summaries(composite, group_of, order)
    rows: dict[str, dict[str, float]] = {}
    for group, composite_summary in composite_groups.items():
        for model, results in by_model.items():
            summary = grouped_summaries(results, group_of, [group])[group]
            rows[f"{group}: {model}"] = with_ratio(summary, composite_summary)
    return rows


def curve_points(paths: Paths, run: Run, record: Mapping[str, Any]) -> list[tuple[float, float]]:
    """(training minutes, HSynth-test fMSE) of every evaluated snapshot and of the final weights."""
    points = []
    exp = experiment_dir(paths, run)
    for minutes, weights in checkpoints_of(exp, 1.0):
        stem = "final" if minutes is None else weights.stem
        results = hsynth_results(paths, run.name, stem)
        if results:
            x = record["minutes"] if minutes is None else minutes
            points.append((x, grouped_summaries(results, lambda r: "all")["all"]["fMSE"]))
    return points


def run_line(record: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a run in the report: budget, steps, images seen, speed, the CPU and its load."""
    return {"minutes": f"{record['minutes']:g}", "steps": str(record["steps"]),
            "images": f"{record['images']:,}", "epochs": f"{record['epochs']:.1f}",
            "images/s": f"{record['images_per_second']:.2f}",
            "CPU, threads, precision": (f"{record['cpu_model']}, {record['threads']}, {record['precision']}"
                                        if record.get("cpu_model") else f"-, {record['threads']}, -"),
            "load avg (mean / max)": (f"{record['load_mean']:.1f} / {record['load_max']:.1f}"
                                      if record.get("load_mean") is not None else "-")}


def grid_rows(result_dirs: Mapping[str, Path], datasets: Sequence[Path], names: Mapping[str, Sequence[str]],
              with_real: bool) -> tuple[list[list[np.ndarray]], list[float], list[str]]:
    """Tiles (composite, mask, one per model, real) of the chosen test images, at the evaluated size, with the
    aspect ratio of the original image (for display)."""
    rows, aspects, labels = [], [], []
    for dataset in datasets:
        loader = HDataset(dataset, "test", augmentator=HCompose([resize_transform(EVAL_STRATEGY)]), lab="none")
        for index, entry in enumerate(loader.entries):
            if entry.name not in names.get(dataset.name, ()):
                continue
            original = loader.get_sample(index)
            sample = loader.augment_sample(original, np.random.default_rng(0))
            tiles = [sample["image"], mask_to_uint8(sample["mask"])]
            for folder in result_dirs.values():
                tiles.append(read_image(folder / "images" / dataset.name / f"{Path(entry.name).stem}.png"))
            if with_real:
                tiles.append(sample["target_image"])
            rows.append(tiles)
            aspects.append(original["image"].shape[1] / original["image"].shape[0])
            labels.append(f"{dataset.name}/{entry.name}")
    return rows, aspects, labels


def pick_hsynth_examples(paths: Paths, families: Mapping[str, str], count_per_family: int = 1) -> list[str]:
    """A deterministic set of HSynth-test composites: the first ones by name of every transform family."""
    test = layout.find_list(paths.hsynth, "test").read_text().split()
    chosen: dict[str, list[str]] = {}
    for name in sorted(test):
        family = families[name]
        if len(chosen.setdefault(family, [])) < count_per_family:
            chosen[family].append(name)
    return [name for family in sorted(chosen) for name in chosen[family]]


def stage_report(paths: Paths, held_out_family: str, args: argparse.Namespace) -> dict[str, Any]:
    """Write docs/quality.md, the figures, and ``<out>/results.json`` (every number of the report)."""
    families = family_of(paths.hsynth / META_NAME)
    meta = read_meta(paths.hsynth / META_NAME)
    composite = hsynth_results(paths, COMPOSITE)
    if not composite:
        raise SystemExit("no Composite evaluation yet: run the evaluate stage first")
    records = {run.name: read_json(exp / "run.json") for run in (*FINAL_RUNS, HELD_OUT_RUN, *ABLATIONS)
               if (exp := experiment_dir(paths, run)) is not None}
    names = final_names(paths)
    finals = {model: results for model, name in names.items() if (results := hsynth_results(paths, name))}
    shipped_rows = {model: shipped_card(paths, model) for model, name in names.items()
                    if model in finals and name.endswith("-shipped")}
    everything = {COMPOSITE: composite, **finals}
    whole = table_rows(everything, lambda r: "HSynth-test", None, composite)
    main_rows = {key.split(": ", 1)[1]: row for key, row in whole.items()}

    bucket_order = [bucket_label(b) for b in FG_RATIO_BUCKETS]

    def bucket_of(result: Any) -> str | None:
        return next((bucket_label(b) for b in FG_RATIO_BUCKETS if in_bucket(result.fg_ratio, b, closed=False)), None)

    family_order = sorted(set(families.values()))
    buckets = table_rows(everything, bucket_of, bucket_order, composite)
    per_family = table_rows(everything, lambda r: families[r.name], family_order, composite)

    held_out_rows: dict[str, dict[str, float]] = {}
    held_out = hsynth_results(paths, HELD_OUT_RUN.name)
    if held_out and "iSSAM" in finals:
        def held_out_group(result: Any) -> str:
            return f"{held_out_family} (held out)" if families[result.name] == held_out_family else "other families"
        held_out_rows = table_rows({"iSSAM, all families": finals["iSSAM"],
                                    f"iSSAM, without {held_out_family}": held_out},
                                   held_out_group, [f"{held_out_family} (held out)", "other families"], composite)

    curves = {run.model: curve_points(paths, run, records[run.name]) for run in FINAL_RUNS if run.name in records}
    composite_fmse = main_rows[COMPOSITE]["fMSE"]
    ablation_rows: dict[str, dict[str, Any]] = {}
    for run in ABLATIONS:
        results = hsynth_results(paths, run.name)
        if run.name in records and results:
            row = with_ratio(grouped_summaries(results, lambda r: "all")["all"], main_rows[COMPOSITE])
            ablation_rows[f"{run.name}: {run.description}"] = {**run_line(records[run.name]),
                                                               "batch": str(run.batch_size), "lr": f"{run.lr:.2g}", **row}
            curves_short = curve_points(paths, run, records[run.name])
            ablation_rows[f"{run.name}: {run.description}"]["ratio at snapshots"] = ", ".join(
                f"{m:g} min {v / composite_fmse:.3f}" for m, v in curves_short)

    shared_rows: dict[str, dict[str, float]] = {}
    shared_all: dict[str, dict[str, float]] = {}
    shared_dirs = {COMPOSITE: paths.eval_dir("shared", COMPOSITE),
                   **{model: paths.eval_dir("shared", name) for model, name in names.items()}}
    shared_results = {name: read_per_image_csv(folder / "per_image.csv")
                      for name, folder in shared_dirs.items() if (folder / "per_image.csv").is_file()}
    if COMPOSITE in shared_results:
        datasets = list(dict.fromkeys(r.dataset for r in shared_results[COMPOSITE]))
        shared_rows = table_rows(shared_results, lambda r: r.dataset, datasets, shared_results[COMPOSITE])
        shared_all = {key.split(": ", 1)[1]: row for key, row in
                      table_rows(shared_results, lambda r: "all", None, shared_results[COMPOSITE]).items()}

    figures = write_figures(paths, names, families, curves, composite_fmse, held_out_family)
    results = {"composite": main_rows[COMPOSITE], "models": {k: v for k, v in main_rows.items() if k != COMPOSITE},
               "buckets": buckets, "families": per_family, "held_out": held_out_rows, "curves": curves,
               "ablations": ablation_rows, "shared": shared_rows, "shared_all": shared_all, "runs": records,
               "shipped_rows": {model: {"weights": card["weights"], "sha256": card["sha256"],
                                        "total_minutes": card["total_minutes"], "total_images": card["total_images"],
                                        "runs": len(card["history"])} for model, card in shipped_rows.items()},
               "figures": figures}
    write_json(paths.out / "results.json", results)
    write_markdown(paths, results, meta, held_out_family, args)
    return results


def write_figures(paths: Paths, names: Mapping[str, str], families: Mapping[str, str], curves: Mapping[str, list],
                  composite_fmse: float, held_out_family: str) -> dict[str, str]:
    """The curve and the result grids, as JPEGs under ``docs/images``; returns {figure: relative path}.
    ``names``: {model: evaluation name} of the rows (:func:`final_names`)."""
    images = paths.docs / "images"
    written: dict[str, str] = {}
    if curves:
        plot = line_plot(curves, "training minutes (2 CPU threads)", "HSynth-test fMSE",
                         reference=("Composite", composite_fmse))
        write_small_jpeg(images / "quality_curve.jpg", plot)
        written["curve"] = "images/quality_curve.jpg"
    hsynth_dirs = {model: folder for model, name in names.items()
                   if ((folder := paths.eval_dir("hsynth", name, "final")) / "images").is_dir()}
    if hsynth_dirs:
        picked = {paths.hsynth.name: pick_hsynth_examples(paths, families)}
        rows, aspects, _ = grid_rows(hsynth_dirs, [paths.hsynth], picked, with_real=True)
        grid = result_grid(rows, ["composite", "mask", *hsynth_dirs, "real"], tile=128, aspects=aspects)
        write_small_jpeg(images / "quality_hsynth_grid.jpg", grid)
        written["hsynth_grid"] = "images/quality_hsynth_grid.jpg"
    shared_dirs = {model: folder for model, name in names.items()
                   if ((folder := paths.eval_dir("shared", name)) / "images").is_dir()}
    folders = shared_gt_folders(paths)
    if shared_dirs and folders:
        picked = {f.name: layout.find_list(f, "test").read_text().split() for f in folders}
        rows, aspects, _ = grid_rows(shared_dirs, folders, picked, with_real=True)
        grid = result_grid(rows, ["composite", "mask", *shared_dirs, "real"], tile=128, aspects=aspects)
        write_small_jpeg(images / "quality_shared_grid.jpg", grid)
        written["shared_grid"] = "images/quality_shared_grid.jpg"
    no_gt_models = {model: folder for model, name in names.items()
                    if (folder := paths.eval_dir("no_gt", name)).is_dir()}
    if no_gt_models:
        rows, aspects = [], []
        for name, composite, mask in no_gt_inputs(paths.shared_data):
            image, mask_array, _ = load_no_gt_pair(paths.shared_data, composite, mask)
            small, small_mask, _ = fixed_size_inputs(image, mask_array)
            rows.append([small, mask_to_uint8(small_mask),
                         *(read_image(folder / f"{name}.png") for folder in no_gt_models.values())])
            aspects.append(image.shape[1] / image.shape[0])
        grid = result_grid(rows, ["composite", "mask", *no_gt_models], tile=160, aspects=aspects)
        write_small_jpeg(images / "quality_no_gt_grid.jpg", grid)
        written["no_gt_grid"] = "images/quality_no_gt_grid.jpg"
    return written


def targets(results: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The issue's targets, each with the measured value and whether it is met."""
    composite = results["composite"]
    rows = {}
    for model, limit in (("iSSAM", 0.6), ("DucoNet", 0.6), ("BargainNet", None)):
        row = results["models"].get(model)
        if row is None:
            rows[model] = {"target": "-", "measured": "not run", "met": "no"}
            continue
        ratio, psnr_gain = row[RATIO], row["PSNR"] - composite["PSNR"]
        if limit is None:
            met = ratio < 1 and psnr_gain > 0
            target = "beats Composite (lower fMSE, higher PSNR)"
        else:
            met = ratio <= limit and psnr_gain > 0
            target = f"fMSE <= {limit} x Composite and a higher PSNR"
        rows[model] = {"target": target, "measured": f"fMSE {ratio:.3f} x Composite, PSNR {psnr_gain:+.2f} dB",
                       "met": "yes" if met else "no"}
    return rows


def write_markdown(paths: Paths, results: Mapping[str, Any], meta: list[dict[str, str]], held_out_family: str,
                   args: argparse.Namespace) -> None:
    split_counts = {split: sum(1 for row in meta if row["split"] == split) for split in ("train", "test")}
    photo_counts = {split: len({row["source_photo"] for row in meta if row["split"] == split})
                    for split in ("train", "test")}
    records = results["runs"]
    run_columns = ("minutes", "steps", "images", "epochs", "images/s", "CPU, threads, precision",
                   "load avg (mean / max)")
    lines = [
        "# Quality: the models learn to harmonize real photos on a CPU",
        "",
        "Written by `python scripts/benchmark_quality.py` (every number below comes from its runs; "
        f"results: `{relative(paths.out / 'results.json')}`). Reproduce it with that one command.",
        "",
        "## Setup",
        "",
        f"* Data: HSynth (`{relative(paths.hsynth)}`), built by `scripts/make_synthetic_dataset.py --seed "
        f"{HSYNTH_BUILD['seed']} --per-photo {HSYNTH_BUILD['per_photo']} --test-fraction "
        f"{HSYNTH_BUILD['test_fraction']}` from the offline photo pool (`scripts/fetch_photos.py`): "
        f"{split_counts['train']} training composites from {photo_counts['train']} photos, "
        f"{split_counts['test']} test composites from {photo_counts['test']} other photos (split by photo).",
        "* Training: the `models/hsynth/*.py` recipes, `train.py --device cpu --threads "
        f"{'/'.join(sorted({str(r['threads']) for r in records.values()})) or args.threads} --workers "
        f"{'/'.join(sorted({str(r['workers']) for r in records.values()})) or args.workers} --amp auto "
        "--channels-last`, "
        "bounded by wall-clock time, one run at a time. The final runs train on on-the-fly HSynth (a new "
        "composite for every sample, drawn from the training photos at 256 x 256; `iharm.data.hsynth.live`); "
        f"the held-out-family run and the ablations on a {WORK_COPY_SIZE} x {WORK_COPY_SIZE} working copy of "
        "HSynth-train. An epoch is as many samples as HSynth-train has composites. The load average below "
        "is that of the machine's 2 cores during the run: about 2 means the run had them to itself.",
        f"* Evaluation: `scripts/evaluate_model.py MODEL CKPT --dataset-path {relative(paths.hsynth)} "
        f"--resize-strategy {EVAL_STRATEGY} --gpu cpu` (iSSAM metric definitions: per-image means, fMSE with "
        "the soft mask, PSNR peak = the target's maximum). BargainNet regenerates the whole image and is scored "
        "composited with the mask (`--composite-output`); DucoNet and iSSAM are scored on their raw output.",
        "",
        "## HSynth-test",
        "",
        markdown_table({k: v for k, v in {"Composite": results["composite"], **results["models"]}.items()},
                       COLUMNS, "model"),
        "",
        "### Targets",
        "",
        markdown_table(targets(results), ("target", "measured", "met"), "model"),
        "",
        "### Runs",
        "",
        markdown_table({name: run_line(record) for name, record in records.items()
                        if name in {r.name for r in (*FINAL_RUNS, HELD_OUT_RUN)}}, run_columns, "run"),
        "",
        *(f"{model}: no run of this benchmark; its rows are those of the shipped weights "
          f"(`{relative(paths.ship_dir / row['weights'])}`, sha256 `{row['sha256'][:12]}...`: "
          f"{row['total_minutes']:g} minutes in {row['runs']} earlier run(s), {row['total_images']:,} images; "
          f"their runs and commands are in `{relative(paths.ship_dir / 'README.md')}`), evaluated here." + "\n"
          for model, row in results["shipped_rows"].items()),
        "Commands:",
        "",
        "```bash",
        *(records[r.name]["command"].replace(PYTHON, "python") for r in (*FINAL_RUNS, HELD_OUT_RUN)
          if r.name in records),
        "```",
        "",
        "## Test fMSE against training time",
        "",
        markdown_table({model: {f"{m:g} min": v for m, v in points} for model, points in results["curves"].items()},
                       sorted({f"{m:g} min" for points in results["curves"].values() for m, _ in points},
                              key=lambda s: float(s.split()[0])), "model (fMSE)"),
        "",
        f"Composite fMSE: {results['composite']['fMSE']:.1f}. "
        + (f"![fMSE against training time]({results['figures']['curve']})" if "curve" in results["figures"] else ""),
        "",
        "## Per foreground-ratio bucket",
        "",
        "Buckets are half-open ([a, b), the last one including 100 %), as `scripts/evaluate_model_fg_ratios.py` (`iharm.utils.metrics.FG_RATIO_BUCKETS`).",
        "",
        markdown_table(results["buckets"], COLUMNS, "bucket: model"),
        "",
        "## Per transform family",
        "",
        markdown_table(results["families"], COLUMNS, "family: model"),
        "",
        f"## Held-out family: {held_out_family}",
        "",
        f"iSSAM trained with the same recipe and time on HSynth-train without the `{held_out_family}` composites, "
        "against the iSSAM trained on all of HSynth-train, on the test composites of that family and on the others.",
        "",
        markdown_table(results["held_out"], COLUMNS, "test images: model") if results["held_out"] else "(not run)",
        "",
        "## Real files with ground truth (`../shared/data`)",
        "",
        "`iharmony4_mini` (HAdobe5k: an expert retouch; HCOCO: 4 colour transfers of one photo), "
        "`triplets/inr_2k` and `triplets/rainnet_256` (stored in the iHarmony4 layout for the evaluation: JPEGs "
        "copied, PNGs as JPEG quality 100 4:4:4), scored at Fixed256 like HSynth-test. Too few images for a "
        "benchmark: they show whether what was learnt on HSynth carries over to real composites.",
        "",
        markdown_table(results["shared"], COLUMNS, "dataset: model") if results["shared"] else "(not run)",
        "",
    ]
    figures = results["figures"]
    if "shared_grid" in figures:
        lines += ["composite | mask | models | real, at the evaluated 256 x 256 (shown at the image's aspect ratio):",
                  "", f"![real files with ground truth]({figures['shared_grid']})", ""]
    if "hsynth_grid" in figures:
        lines += ["HSynth-test, the first composite of every transform family (by name):", "",
                  f"![HSynth-test examples]({figures['hsynth_grid']})", ""]
    if "no_gt_grid" in figures:
        notes = [note for _, composite, mask in no_gt_inputs(paths.shared_data)
                 if (note := load_no_gt_pair(paths.shared_data, composite, mask)[2])]
        lines += ["## Real composites without ground truth (`../shared/data/composites_no_gt`)", "",
                  "composite | mask | models, predicted at 256 x 256 as evaluated. " + " ".join(notes), "",
                  f"![real composites]({figures['no_gt_grid']})", ""]
    if results["ablations"]:
        lines += ["## What makes a model learn within the hour (ablations, iSSAM)", "",
                  "Each run: HSynth-train, the batch and minutes shown; evaluated on HSynth-test like the final "
                  "runs.", "",
                  markdown_table(results["ablations"], ("batch", "lr", *run_columns, "fMSE", RATIO, "PSNR",
                                                        "ratio at snapshots"), "variant"), ""]
    (paths.docs / "quality.md").write_text("\n".join(lines))
    log(f"wrote {paths.docs / 'quality.md'}")
