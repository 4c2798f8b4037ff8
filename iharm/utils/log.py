"""Logging for training and evaluation: console and file, main process only."""
from __future__ import annotations

import logging
import sys
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
