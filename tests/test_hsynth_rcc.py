"""The Qt resource archive reader, on archives built here byte by byte from the format."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from iharm.data.errors import DataError
from iharm.data.hsynth.rcc import RccArchive

# An archive is a tree of (name, children | (payload, compress)); the root has no name.
Tree = dict[str, "Tree | tuple[bytes, bool]"]


def build_rcc(tree: Tree, version: int = 3) -> bytes:
    """An .rcc archive written from the format description (header, data, names, tree).

    Nodes are laid out breadth-first so that each directory's children are
    contiguous, as Qt's rcc does; hashes are dummies (readers look names up by walking).
    """
    data, names = bytearray(), bytearray()
    nodes: list[bytes] = []
    order: list[tuple[str, Tree | tuple[bytes, bool], int]] = []
    queue: list[tuple[str, Tree | tuple[bytes, bool]]] = [("", tree)]
    for name, item in queue:  # the queue grows while it is walked: breadth-first order
        first_child = len(queue)
        if isinstance(item, dict):
            queue.extend(item.items())
        order.append((name, item, first_child))
    for name, item, first_child in order:
        name_offset = len(names)
        encoded = name.encode("utf-16-be")
        names += struct.pack(">HI", len(encoded) // 2, 0) + encoded
        if isinstance(item, dict):
            node = struct.pack(">IHII", name_offset, 0x02, len(item), first_child)
        else:
            payload, compress = item
            blob = struct.pack(">I", len(payload)) + zlib.compress(payload) if compress else payload
            node = struct.pack(">IHHHI", name_offset, 0x01 if compress else 0x00, 0, 0, len(data))
            data += struct.pack(">I", len(blob)) + blob
        nodes.append(node + (b"" if version == 1 else struct.pack(">Q", 0)))
    header_size = 20 if version < 3 else 24
    data_offset = header_size
    names_offset = data_offset + len(data)
    tree_offset = names_offset + len(names)
    header = b"qres" + struct.pack(">IIII", version, tree_offset, data_offset, names_offset)
    if version >= 3:
        header += struct.pack(">I", 0)
    return header + bytes(data) + bytes(names) + b"".join(nodes)


SAMPLE: Tree = {
    "top.txt": (b"at the root", False),
    "gcompris": {
        "a.txt": (b"plain bytes", False),
        "deep": {"b.bin": (bytes(range(256)) * 40, True)},
        "ünï.txt": ("utf-16 names".encode(), True),
    },
}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_reads_names_and_contents_of_a_hand_built_archive(version: int) -> None:
    archive = RccArchive(build_rcc(SAMPLE, version))
    assert archive.version == version
    assert sorted(archive.names()) == sorted(["top.txt", "gcompris/a.txt", "gcompris/deep/b.bin", "gcompris/ünï.txt"])
    assert archive.read("top.txt") == b"at the root"
    assert archive.read("gcompris/a.txt") == b"plain bytes"
    assert archive.read("gcompris/deep/b.bin") == bytes(range(256)) * 40
    assert archive.read("gcompris/ünï.txt") == b"utf-16 names"


def test_open_reads_from_disk_and_names_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.rcc"
    path.write_bytes(build_rcc(SAMPLE))
    assert RccArchive.open(path).read("top.txt") == b"at the root"
    with pytest.raises(DataError, match="missing.rcc: file not found"):
        RccArchive.open(tmp_path / "missing.rcc")


def test_bad_input_gives_clear_errors() -> None:
    with pytest.raises(DataError, match="no 'qres' header"):
        RccArchive(b"PK\x03\x04" + bytes(40), "zip.rcc")
    with pytest.raises(DataError, match="version 9"):
        RccArchive(b"qres" + struct.pack(">IIII", 9, 0, 0, 0), "v9.rcc")
    archive = RccArchive(build_rcc(SAMPLE), "ok.rcc")
    with pytest.raises(DataError, match="no entry 'nope'"):
        archive.read("nope")
    with pytest.raises(DataError, match="truncated archive"):
        RccArchive(build_rcc(SAMPLE)[:30], "cut.rcc")


def test_zstd_entries_are_refused_by_name() -> None:
    raw = bytearray(build_rcc({"z.bin": (b"zzz", False)}))
    # The single file node is the last 22 bytes; its flags follow the 4-byte name offset.
    flags_at = len(raw) - 22 + 4
    raw[flags_at:flags_at + 2] = struct.pack(">H", 0x04)
    with pytest.raises(DataError, match="zstd"):
        RccArchive(bytes(raw)).read("z.bin")


def test_a_real_gcompris_archive_if_present() -> None:
    candidates = [Path("/usr/share/gcompris-qt/rcc/erase.rcc"),
                  *Path(__file__).resolve().parents[1].glob("photos/.cache/debian/gcompris-qt-data/usr/share/gcompris-qt/rcc/erase.rcc")]
    present = [path for path in candidates if path.is_file()]
    if not present:
        pytest.skip("no GCompris archive installed or cached (scripts/fetch_photos.py fetches one)")
    archive = RccArchive.open(present[0])
    photos = [name for name in archive.names() if name.endswith("/bee.webp")]
    assert photos == ["gcompris/src/activities/erase/resource/bee.webp"]
    image = cv2.imdecode(np.frombuffer(archive.read(photos[0]), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and min(image.shape[:2]) >= 500
