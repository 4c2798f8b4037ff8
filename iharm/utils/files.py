"""Safe file writing, shared by checkpoints, images and reports: atomic writes with the usual
permissions, and output paths checked before any work (never over an input, always writable)."""
from __future__ import annotations

import os
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from iharm.errors import IharmError


_UMASK_LOCK = threading.Lock()


def new_file_mode(path: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: an existing file keeps its own,
    a new one gets ``0o666`` less the process umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        pass
    with _UMASK_LOCK:  # the umask can only be read by setting it
        umask = os.umask(0o077)
        os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces ``path`` only when the block succeeds.

    The data go to a temporary file in the same folder, which is fsynced and
    renamed over ``path`` (then the folder is fsynced): a crash, a SIGKILL or a
    full disk leaves either the old file or the new one, never a partial file
    that a later run would take for a finished one. On an error the temporary
    file is removed and the error propagates. The file gets the mode ``open()``
    would give it (:func:`new_file_mode`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = new_file_mode(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)  # mkstemp's 0600 would hide every result from the group and other users
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_open`."""
    with atomic_open(path) as handle:
        handle.write(text.encode("utf-8"))


class OutputPathError(IharmError, ValueError):
    """An output location that would replace an input, or that cannot be written: refused before any work."""


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def refuse_outputs_over_inputs(outputs: Mapping[str, Iterable[str | os.PathLike]],
                               inputs: Iterable[str | os.PathLike]) -> None:
    """Raise :class:`OutputPathError` naming the flag when an output path resolves to an input file
    or folder (through symlinks, ``..`` and hard links): an output never replaces an input.

    Each path is resolved once (a folder of many images is checked in linear time)."""
    by_path: dict[Path, Path] = {}
    by_id: dict[tuple[int, int], Path] = {}
    for source in map(Path, inputs):
        by_path.setdefault(source.resolve(), source)
        if (file_id := _file_id(source)) is not None:
            by_id.setdefault(file_id, source)
    for flag, paths in outputs.items():
        for path in map(Path, paths):
            source = by_path.get(path.resolve()) or by_id.get(_file_id(path))
            if source is not None:
                raise OutputPathError(f"{flag} {path}: is the input {source}; an output never replaces an input")


def ensure_writable_folder(folder: str | os.PathLike, flag: str) -> None:
    """Raise :class:`OutputPathError` naming ``flag`` unless files can be written in ``folder``.

    A missing folder is not created here (a run that fails later leaves nothing
    behind): its nearest existing ancestor must be a writable folder. The probe
    is a temporary file, created and removed at once.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        if existing.is_symlink():
            raise OutputPathError(f"{flag} {folder}: {existing} is a dangling symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        what = "exists and is not a folder" if existing == folder else f"cannot be created: {existing} is a file"
        raise OutputPathError(f"{flag} {folder}: {what}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OutputPathError(f"{flag} {folder}: cannot write in {existing} ({exc.strerror or exc})") from None


def check_output_file(path: str | os.PathLike, flag: str, inputs: Iterable[str | os.PathLike]) -> None:
    """Before any work: ``path`` (given by ``flag``) is no input, no folder, and can be written."""
    path = Path(path)
    refuse_outputs_over_inputs({flag: [path]}, inputs)
    if path.is_dir():
        raise OutputPathError(f"{flag} {path}: is a folder; name the output file")
    ensure_writable_folder(path.parent, flag)
