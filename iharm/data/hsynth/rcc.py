"""A small pure-Python reader of Qt binary resource archives (``.rcc``).

GCompris ships its photographs inside such archives. The format (written by
Qt's ``rcc -binary``; versions 1 to 3) is, all integers big-endian:

* header: ``b"qres"``, version (u32), tree offset, data offset, names offset
  (u32 each) and, from version 3 on, overall flags (u32);
* tree: fixed-size nodes, node 0 being the root directory. A node is the
  offset of its name (u32) and flags (u16: 1 zlib, 2 directory, 4 zstd), then
  either child count + index of the first child node (u32, u32) for a
  directory, or territory + language (u16, u16) + data offset (u32) for a
  file; from version 2 on an 8-byte modification time follows (22 bytes a
  node instead of 14);
* names: length in UTF-16 code units (u16), a hash (u32), the UTF-16BE name;
* data: size (u32) then the bytes; zlib-compressed entries are in Qt's
  ``qCompress`` format: the uncompressed size (u32) then a zlib stream.

Zstandard-compressed entries (flag 4) need a library Python 3.11 does not
have; reading one raises a :class:`DataError` that says so.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from iharm.data.errors import DataError

_FLAG_ZLIB = 0x01
_FLAG_DIRECTORY = 0x02
_FLAG_ZSTD = 0x04


class RccArchive:
    """An ``.rcc`` archive held in memory: list its files and read them.

    >>> archive = RccArchive.open("erase.rcc")          # doctest: +SKIP
    >>> data = archive.read("gcompris/src/activities/erase/resource/bee.webp")  # doctest: +SKIP
    """

    def __init__(self, data: bytes, source: str | os.PathLike = "<memory>") -> None:
        self.source = Path(source)
        self._data = data
        if len(data) < 20 or data[:4] != b"qres":
            raise DataError(self.source, "not a Qt resource archive (no 'qres' header)")
        self.version, self._tree, self._payload, self._names = struct.unpack(">IIII", data[4:20])
        if not 1 <= self.version <= 3:
            raise DataError(self.source, f"unsupported rcc format version {self.version} (1 to 3 are known)")
        self._node_size = 14 if self.version == 1 else 22
        self._files = self._walk()

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RccArchive":
        """Read the archive at ``path`` (a missing file raises DataError naming it)."""
        try:
            return cls(Path(path).read_bytes(), path)
        except FileNotFoundError:
            raise DataError(path, "file not found") from None

    def names(self) -> list[str]:
        """Paths of all files in the archive, '/'-separated, in archive order."""
        return list(self._files)

    def read(self, name: str) -> bytes:
        """The uncompressed bytes of the file ``name`` (a path from :meth:`names`)."""
        if name not in self._files:
            raise DataError(self.source, f"has no entry {name!r}")
        flags, offset = self._files[name]
        where = f"entry {name!r}"
        start = self._payload + offset
        size = self._u32(start, where)
        blob = self._slice(start + 4, size, where)
        if flags & _FLAG_ZSTD:
            raise DataError(self.source, f"{where} is zstd-compressed, which this reader does not support")
        if flags & _FLAG_ZLIB:
            expected = self._u32(start + 4, where)
            try:
                blob = zlib.decompress(blob[4:])
            except zlib.error as exc:
                raise DataError(self.source, f"{where}: corrupt zlib data ({exc})") from None
            if len(blob) != expected:
                raise DataError(self.source, f"{where}: {len(blob)} bytes after decompression, header says {expected}")
        return blob

    # -- parsing -------------------------------------------------------------------
    def _slice(self, start: int, size: int, where: str) -> bytes:
        if start < 0 or start + size > len(self._data):
            raise DataError(self.source, f"truncated archive: {where} reaches past the end of the file")
        return self._data[start:start + size]

    def _u32(self, pos: int, where: str) -> int:
        return struct.unpack(">I", self._slice(pos, 4, where))[0]

    def _name(self, offset: int) -> str:
        pos = self._names + offset
        (length,) = struct.unpack(">H", self._slice(pos, 2, "a name"))
        return self._slice(pos + 6, 2 * length, "a name").decode("utf-16-be")

    def _node(self, index: int) -> tuple[int, int, int, int]:
        """(name offset, flags, a, b): a, b are (count, first child) or (locale, data offset)."""
        raw = self._slice(self._tree + index * self._node_size, 14, f"tree node {index}")
        name_offset, flags = struct.unpack(">IH", raw[:6])
        a, b = struct.unpack(">II", raw[6:14])
        return name_offset, flags, a, b

    def _walk(self) -> dict[str, tuple[int, int]]:
        """Map every file path to (flags, data offset) by walking the tree from the root."""
        files: dict[str, tuple[int, int]] = {}
        stack: list[tuple[int, str]] = [(0, "")]
        seen: set[int] = set()
        while stack:
            index, prefix = stack.pop()
            if index in seen:  # a malformed tree must not loop forever
                raise DataError(self.source, f"corrupt tree: node {index} is reachable twice")
            seen.add(index)
            name_offset, flags, a, b = self._node(index)
            path = prefix if index == 0 else f"{prefix}{self._name(name_offset)}"
            if flags & _FLAG_DIRECTORY:
                children = range(b, b + a)
                # Reversed so that popping from the stack visits children in archive order.
                stack.extend((child, f"{path}/" if path else "") for child in reversed(children))
            else:
                files[path] = (flags, b)
        return files
