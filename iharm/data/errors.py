"""The one exception type for bad data: it always names the file (and list line)."""
from __future__ import annotations

import os
from pathlib import Path

from iharm.errors import IharmError


class DataError(IharmError, ValueError):
    """A dataset or image file is missing, unreadable or inconsistent.

    ``str(error)`` reads ``<path>[:<line>]: <what is wrong>`` so that a user can
    open the file at once; ``path``, ``message`` and ``line`` are kept as
    attributes for tools that collect problems (``check_dataset.py``,
    ``--skip-bad-samples``). ``DataError(text)`` with a single argument is
    accepted too: that is how a DataLoader worker re-raises it in the main process.
    """

    def __init__(self, path: str | os.PathLike, message: str | None = None, line: int | None = None) -> None:
        if message is None:
            self.path, self.message, self.line = None, str(path), None
            super().__init__(self.message)
            return
        self.path = Path(path)
        self.message = message
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # keep the attributes across process boundaries
        return (DataError, (self.path if self.path is not None else self.message,
                            self.message if self.path is not None else None, self.line))
