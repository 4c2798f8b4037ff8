"""No tool writes over its own inputs, and output locations are checked before any work.

The checkpoint given here is garbage: a refusal that names the output flag (exit 2)
therefore also proves that it came before the model was loaded. Every case checks
that the inputs are byte-identical afterwards and that nothing was written.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from iharm.data.io import write_image
from iharm.utils.files import OutputPathError, ensure_writable_folder, refuse_outputs_over_inputs
from test_evaluate import load_script

predict_for_dir = load_script("predict_for_dir")


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes (symlinks as their targets)."""
    return {str(p.relative_to(folder)): (f"-> {os.readlink(p)}" if p.is_symlink()
                                         else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()}


@pytest.fixture
def same(tmp_path: Path) -> Path:
    """The issue's folder: a.png a_mask.png b.jpg b_mask.png, plus a garbage checkpoint beside it."""
    folder = tmp_path / "same"
    folder.mkdir()
    image = np.full((24, 32, 3), 120, np.uint8)
    mask = np.zeros((24, 32, 3), np.uint8)
    mask[6:18, 8:24] = 255
    for stem, ext in (("a", "png"), ("b", "jpg")):
        write_image(folder / f"{stem}.{ext}", image)
        write_image(folder / f"{stem}_mask.png", mask)
    (tmp_path / "w.pth").write_bytes(b"not a checkpoint")
    return folder


def _run(capsys, *args: str) -> tuple[int, str]:
    code = predict_for_dir.main(["iSSAM", *args, "--gpu", "cpu"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("extra", [[], ["--output-format", "same", "--overwrite"]])
def test_results_in_the_input_folder_are_refused(same, capsys, extra):
    before = _tree(same.parent)
    code, err = _run(capsys, str(same.parent / "w.pth"), "--images", str(same), "--results-path", str(same), *extra)
    assert code == 2 and "--results-path" in err and "never replaces an input" in err
    assert len(err.strip().splitlines()) == 1
    assert _tree(same.parent) == before


@pytest.mark.parametrize("spelling", ["dotdot", "symlink"])
def test_the_input_folder_under_another_name_is_refused(same, capsys, spelling):
    if spelling == "dotdot":
        results = same / ".." / "same"
    else:
        results = same.parent / "link"
        results.symlink_to(same, target_is_directory=True)
    before = _tree(same.parent)
    code, err = _run(capsys, str(same.parent / "w.pth"), "--images", str(same), "--results-path", str(results))
    assert code == 2 and "--results-path" in err
    assert _tree(same.parent) == before


def test_an_output_file_that_is_the_mask_is_refused(same, capsys):
    before = _tree(same.parent)
    code, err = _run(capsys, str(same.parent / "w.pth"), "--image", str(same / "b.jpg"), "--mask",
                     str(same / "b_mask.png"), "--output", str(same / "b_mask.png"), "--overwrite")
    assert code == 2 and "--output" in err and "b_mask.png" in err
    assert _tree(same.parent) == before


def test_an_output_that_links_to_an_input_is_refused(same, capsys, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "a.png").symlink_to(same / "a.png")
    before = _tree(tmp_path)
    code, err = _run(capsys, str(tmp_path / "w.pth"), "--images", str(same), "--results-path", str(results),
                     "--overwrite")
    assert code == 2 and "--results-path" in err and "a.png" in err
    assert _tree(tmp_path) == before


def test_the_checkpoint_is_an_input_too(same, capsys, tmp_path):
    code, err = _run(capsys, str(tmp_path / "w.pth"), "--image", str(same / "a.png"), "--mask",
                     str(same / "a_mask.png"), "--output", str(tmp_path / "w.pth"), "--overwrite")
    assert code == 2 and "--output" in err and (tmp_path / "w.pth").read_bytes() == b"not a checkpoint"


@pytest.mark.parametrize("kind", ["a file", "unwritable"])
def test_unwritable_output_folders_fail_before_loading(same, capsys, tmp_path, kind):
    if kind == "a file":
        results = tmp_path / "results"
        results.write_text("I am a file")
        message = "is not a folder"
    else:
        results = Path("/proc/iharm-results")  # procfs: nothing can be created there, even as root
        message = "cannot write"
    code, err = _run(capsys, str(tmp_path / "w.pth"), "--images", str(same), "--results-path", str(results))
    assert code == 2 and "--results-path" in err and message in err
    assert len(err.strip().splitlines()) == 1


def test_a_missing_output_folder_is_checked_but_not_created(tmp_path):
    target = tmp_path / "new" / "deeper"
    ensure_writable_folder(target, "--results-path")
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match=r"--out .*file is a file"):
        ensure_writable_folder(tmp_path / "file" / "sub", "--out")


def test_hard_links_are_the_same_file(tmp_path):
    source = tmp_path / "input.png"
    source.write_bytes(b"x")
    os.link(source, tmp_path / "alias.png")
    with pytest.raises(OutputPathError, match="--output"):
        refuse_outputs_over_inputs({"--output": [tmp_path / "alias.png"]}, [source])
    refuse_outputs_over_inputs({"--output": [tmp_path / "other.png"]}, [source])  # a new name is fine


# --- the evaluators and the harmony score ----------------------------------------------------------------

evaluate_model = load_script("evaluate_model")
evaluate_fg_ratios = load_script("evaluate_model_fg_ratios")
harmony_score = load_script("predict_harmony_score")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    from tiny_data import make_dataset
    return make_dataset(tmp_path / "data", "Tiny", size=(48, 32), splits={"test": 1})


@pytest.mark.parametrize("script", [evaluate_model, evaluate_fg_ratios], ids=["evaluate_model", "fg_ratios"])
@pytest.mark.parametrize("case", ["results is a file", "results is the dataset", "results in its images",
                                  "prefix climbs out", "save-images unwritable"])
def test_evaluation_outputs_are_checked_before_scoring(script, case, dataset, tmp_path, capsys):
    args = ["Composite", "--dataset-path", str(dataset), "--gpu", "cpu"]
    flag = "--results-path"
    if case == "results is a file":
        (tmp_path / "results").write_text("a file")
        args += [flag, str(tmp_path / "results")]
    elif case == "results is the dataset":
        args += [flag, str(dataset / ".." / dataset.name)]
    elif case == "results in its images":
        args += [flag, str(dataset / "composite_images")]
    elif case == "prefix climbs out":
        args += [flag, str(tmp_path / "results"), "--eval-prefix", "../../x_"]
        flag = "--eval-prefix"
    else:
        args += ["--save-images", "/proc/iharm-predictions"]
        flag = "--save-images"
    before = _tree(tmp_path)
    assert script.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert flag in err and len(err.splitlines()) == 1, err
    assert _tree(tmp_path) == before


def test_harmony_score_output_is_checked_before_the_checkpoint_loads(same, capsys, tmp_path):
    garbage = str(tmp_path / "w.pth")
    cases = {str(same / "a.png"): "never replaces an input", str(same): "never replaces an input",
             str(tmp_path): "is a folder", "/proc/iharm-scores.csv": "cannot write"}
    before = _tree(tmp_path)
    for output, message in cases.items():
        source = ["--images", str(same)] if output == str(same) else ["--image", str(same / "a.png"), "--mask",
                                                                    str(same / "a_mask.png")]
        assert harmony_score.main(["--checkpoint", garbage, *source, "--output", output]) == 2
        err = capsys.readouterr().err.strip()
        assert "--output" in err and message in err and len(err.splitlines()) == 1, err
    assert _tree(tmp_path) == before
