"""Mask lookup in users' folders: the documented rules, ambiguity, and nothing ignored silently."""
from __future__ import annotations

from pathlib import Path

from iharm.data.errors import DataError
from iharm.inference.pairing import pair_masks


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_rules_in_order_with_a_separate_masks_folder(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    _touch(images, "a.jpg", "b.png", "c1_2_3.jpg", "d.jpg", "e.jpg", "notes.txt", "stray_mask.png")
    _touch(masks, "a.png", "a_mask.png", "b_mask.jpg", "c1_2.png", "e.png", "e.jpg")
    pairs, notes = pair_masks(images, masks)
    found = {image.name: mask for image, mask in pairs}
    assert found["a.jpg"] == masks / "a.png"           # rule 1 wins over rule 2
    assert found["b.png"] == masks / "b_mask.jpg"      # rule 2, any extension
    assert found["c1_2_3.jpg"] == masks / "c1_2.png"   # rule 3, the official name
    assert isinstance(found["d.jpg"], DataError) and "no mask found: looked for d.<ext> or d_mask.<ext>" in str(found["d.jpg"])
    assert isinstance(found["e.jpg"], DataError) and "several masks match" in str(found["e.jpg"])
    assert "stray_mask.png" not in found
    assert any("notes.txt: skipped, not an image file" in n for n in notes)
    assert any("stray_mask.png: skipped: named like a mask" in n for n in notes)


def test_masks_beside_the_images(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg", "a_mask.png", "c1_2_3.jpg", "c1_2.png")
    pairs, notes = pair_masks(tmp_path, tmp_path)
    # c1_2.png is c1_2_3.jpg's mask, so it is not a composite itself
    assert [(i.name, m.name) for i, m in pairs] == [("a.jpg", "a_mask.png"), ("c1_2_3.jpg", "c1_2.png")]
    assert notes == []


def test_broken_symbolic_links_fail_instead_of_vanishing(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg", "a_mask.png")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "readme.txt").symlink_to(tmp_path / "nowhere.txt")
    pairs, notes = pair_masks(tmp_path, tmp_path)
    found = {image.name: mask for image, mask in pairs}
    assert list(found) == ["a.jpg", "gone.jpg", "loop.png"] and found["a.jpg"] == tmp_path / "a_mask.png"
    for name in ("gone.jpg", "loop.png"):
        assert isinstance(found[name], DataError) and "resolves to no file" in str(found[name]), name
    assert any("readme.txt: skipped, a symbolic link" in n for n in notes)
