"""Logging for training and evaluation (console and file, main process only) and warnings as lines."""
from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOGGER_NAME = "iharm"
logger = logging.getLogger(LOGGER_NAME)


def setup_logging(log_file: Path | None = None, main_process: bool = True) -> logging.Logger:
    """Log ``(LEVEL) time: message`` to stderr and ``log_file``; other ranks only log warnings."""
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if main_process else logging.WARNING)
    formatter = logging.Formatter("(%(levelname)s) %(asctime)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter)
    logger.addHandler(console)
    if log_file is not None and main_process:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger


@contextmanager
def warnings_as_lines(print_line: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> Iterator[None]:
    """Show every warning raised inside the block as one ``warning: <message>`` line (a mask read
    as binary, a mask stretched to its image), each time it happens, instead of Python's
    once-per-place ``file:line: Category: message`` form."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for warning in caught:
                print_line(f"warning: {warning.message}")
