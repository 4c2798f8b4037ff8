"""Stage ``ship``: weights that meet the ship rule go to ``--ship-dir`` with a model card; better ones short
of it are kept as candidates."""
from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from iharm.data.hsynth.builder import META_NAME, read_meta
from iharm.inference.predictor import COMPOSITE
from iharm.tools.quality import markdown_table
from iharm.tools.quality_benchmark.cards import CANDIDATES, candidate_cards, shipped_card
from iharm.tools.quality_benchmark.common import (COLUMNS, EVAL_STRATEGY, FINAL_RUNS, HSYNTH_BUILD, MODELS, PYTHON,
                                                  RATIO, SHIP_MAX_FMSE_RATIO, Paths, experiment_dir, log, read_json,
                                                  relative, write_json)


#: What a run's history entry keeps of its run record.
HISTORY_KEYS = ("command", "recipe", "overrides", "minutes", "steps", "images", "images_per_second", "seed",
                "batch_size", "cpu_model", "cpu_flags", "precision", "threads", "workers", "load_mean", "load_max",
                "resumed", "torch", "finished")


def ship_refusals(row: Mapping[str, float], composite: Mapping[str, float], shared: Mapping[str, Mapping[str, float]],
                  model: str, previous: Mapping[str, Any] | None) -> list[str]:
    """Why a final model may not be shipped (empty: it may). The ship rule: fMSE <= SHIP_MAX_FMSE_RATIO x the
    Composite row and a higher PSNR on HSynth-test, a lower fMSE than Composite on the real files with ground
    truth, and a lower HSynth-test fMSE than the weights shipped before."""
    reasons = []
    if row[RATIO] > SHIP_MAX_FMSE_RATIO:
        reasons.append(f"HSynth-test fMSE {row[RATIO]:.3f} x Composite > {SHIP_MAX_FMSE_RATIO}")
    if row["PSNR"] <= composite["PSNR"]:
        reasons.append(f"HSynth-test PSNR {row['PSNR']:.2f} <= Composite {composite['PSNR']:.2f}")
    if model not in shared or COMPOSITE not in shared:
        reasons.append("not evaluated on the real files with ground truth")
    elif shared[model]["fMSE"] >= shared[COMPOSITE]["fMSE"]:
        reasons.append(f"real files fMSE {shared[model]['fMSE']:.1f} >= Composite {shared[COMPOSITE]['fMSE']:.1f}")
    if previous is not None and row["fMSE"] >= previous["hsynth_test"]["model"]["fMSE"]:
        reasons.append(f"HSynth-test fMSE {row['fMSE']:.1f} does not beat the shipped "
                       f"{previous['hsynth_test']['model']['fMSE']:.1f}")
    return reasons


def stage_ship(paths: Paths, results: Mapping[str, Any]) -> None:
    """Ship each final model that meets the ship rule (:func:`ship_refusals`) to ``ship_dir``: its weights
    (only the weights: no optimizer state) and a model card that adds this run to the runs it continued.

    A model refused only for its scores, that beats Composite on HSynth-test and the weights it started
    from, is kept as a candidate in ``ship_dir/candidates`` (a new ``_run<N>`` file each time, nothing
    replaced) so that the next run continues from it."""
    composite, shared = results["composite"], results.get("shared_all", {})
    for run in FINAL_RUNS:
        row = results["models"].get(run.model)
        if row is None or run.name not in results["runs"]:
            continue
        exp = experiment_dir(paths, run)
        weights = None if exp is None else exp / "checkpoints" / "last_checkpoint.pth"
        if weights is None or not weights.is_file():
            log(f"{run.model}: not shipped: its training left no last_checkpoint.pth")
            continue
        if weights.stat().st_size > 60e6:
            log(f"{run.model}: not shipped: {weights.stat().st_size / 1e6:.0f} MB is too big for the repository")
            continue
        record = results["runs"][run.name]
        started = record.get("continued_from")
        before = read_json(paths.ship_dir / started["card"]) if started and started.get("card") else \
            shipped_card(paths, run.model) if started else None
        history = [*(before["history"] if before is not None else []),
                   {**{key: record.get(key) for key in HISTORY_KEYS}, "hsynth_test_fmse": row["fMSE"]}]
        card = {"model": run.model,
                "trained_on": "HSynth-train: composites drawn on the fly from the photos of the offline pool that "
                              "are not in HSynth-test (split by photo)",
                "hsynth_build": HSYNTH_BUILD, "total_minutes": sum(h["minutes"] for h in history),
                "total_images": sum(h["images"] for h in history), "history": history,
                "hsynth_test": {"resize": EVAL_STRATEGY, "model": row, "composite": composite},
                "real_files": {"model": shared.get(run.model), "composite": shared.get(COMPOSITE)}}
        reasons = ship_refusals(row, composite, shared, run.model, shipped_card(paths, run.model))
        if not reasons:
            target = paths.ship_dir / f"{run.model}_hsynth.pth"
        elif row["fMSE"] < composite["fMSE"] and (before is None or row["fMSE"] < before["hsynth_test"]["model"]["fMSE"]):
            target = paths.ship_dir / CANDIDATES / f"{run.model}_hsynth_run{len(history)}.pth"
            card["not_shipped_because"] = reasons
            if target.exists() or target.with_suffix(".json").exists():
                log(f"{run.model}: not shipped ({'; '.join(reasons)}), and not kept: {relative(target)} exists")
                continue
        else:
            log(f"{run.model}: not shipped: {'; '.join(reasons)}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.new")
        shutil.copyfile(weights, staged)
        digest = hashlib.sha256(staged.read_bytes()).hexdigest()
        staged.replace(target)
        write_json(target.with_suffix(".json"), {**card, "weights": target.name, "sha256": digest})
        if reasons:
            log(f"{run.model}: not shipped ({'; '.join(reasons)}); kept as the candidate {relative(target)}")
        else:
            log(f"{run.model}: shipped {relative(target)} (fMSE {row[RATIO]:.3f} x Composite)")
    cards = {model: card for model in MODELS if (card := shipped_card(paths, model)) is not None}
    if cards:
        write_ship_readme(paths.ship_dir / "README.md", list(cards.values()), SHIPPED_INTRO)
        test_photos = sorted({row["source_photo"] for row in read_meta(paths.hsynth / META_NAME)
                              if row["split"] == "test"})
        (paths.ship_dir / "test_photos.txt").write_text("\n".join(test_photos) + "\n")
    candidates = [read_json(path) for path in candidate_cards(paths)]
    if candidates:
        write_ship_readme(paths.ship_dir / CANDIDATES / "README.md", candidates, CANDIDATES_INTRO)


SHIPPED_INTRO = (
    "# HSynth checkpoints\n\n"
    "Weights trained by `scripts/benchmark_quality.py` on HSynth-train (real photos that install offline, "
    f"synthetic composites drawn anew for every sample, data seed {HSYNTH_BUILD['seed']}, split by photo), on "
    "CPUs, over one or more runs: each run starts from the best weights kept before it (shipped or candidate), "
    "and replaces the shipped ones only when it beats them on HSynth-test. They are the registered "
    "architectures: `load_model(NAME, path)` and `scripts/predict_for_dir.py NAME path` use them as they are. "
    "They are far less trained than the paper checkpoints (120 GPU epochs on iHarmony4); see docs/quality.md. "
    "`test_photos.txt` names the photos of HSynth-test, which they never saw.")
CANDIDATES_INTRO = (
    "# Candidate weights: trained, measured, not shipped\n\n"
    "Weights that beat the input composites and the weights their run started from, but not the ship rule of "
    f"`scripts/benchmark_quality.py` (HSynth-test fMSE <= {SHIP_MAX_FMSE_RATIO} x Composite, a higher PSNR, "
    "better than Composite on the real files with ground truth, better than the shipped weights). They are kept "
    "so that the next final run of `scripts/benchmark_quality.py` continues from them instead of starting over; "
    "they are defaults of nothing (`Harmonizer()` and `make demo` use `checkpoints/hsynth/<model>_hsynth.pth` "
    "only). Each is the registered architecture: `load_model(NAME, path)` loads it.")


def write_ship_readme(path: Path, cards: Sequence[Mapping[str, Any]], intro: str) -> None:
    """A README of model cards (``intro``, then each JSON card as tables of scores and runs)."""
    lines = [intro, ""]
    for card in cards:
        test, real = card["hsynth_test"], card["real_files"]
        model = card["model"]
        lines += [f"## {card['weights']}", "",
                  f"{card['total_minutes']:g} minutes of training in {len(card['history'])} run(s), "
                  f"{card['total_images']:,} training images seen; sha256 `{card.get('sha256', '-')}`.", ""]
        if card.get("not_shipped_because"):
            lines += [f"Not shipped: {'; '.join(card['not_shipped_because'])}.", ""]
        lines += [markdown_table({"Composite": test["composite"], model: test["model"]}, COLUMNS,
                                 f"HSynth-test, {test['resize']}"), ""]
        if real["model"] is not None:
            lines += [markdown_table({"Composite": real["composite"], model: real["model"]}, COLUMNS,
                                     "real files with ground truth (../shared/data)"), ""]
        lines += ["| run | finished | recipe | minutes | images | images/s | CPU | precision | threads | load avg | "
                  "HSynth-test fMSE |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for number, run in enumerate(card["history"], start=1):
            load = "-" if run.get("load_mean") is None else f"{run['load_mean']:.2f} / {run['load_max']:.2f}"
            recipe = f"{run.get('recipe') or '-'} {run.get('overrides') or ''}".strip()
            lines.append(f"| {number} | {run['finished']} | {recipe} | {run['minutes']:g} | {run['images']:,} | "
                         f"{run['images_per_second']:.2f} | {run['cpu_model']} | {run['precision']} | "
                         f"{run['threads']} | {load} | {run['hsynth_test_fmse']:.1f} |")
        weights = path.parent / card["weights"]
        lines += ["", "Last run's command:", "", "```bash",
                  card["history"][-1]["command"].replace(PYTHON, "python"), "```", "", "Use it:", "", "```bash",
                  f"python scripts/predict_for_dir.py {model} {relative(weights)} "
                  "--images my_composites/ --masks my_masks/ --results-path harmonized/ --gpu cpu", "```", ""]
    path.write_text("\n".join(lines))
