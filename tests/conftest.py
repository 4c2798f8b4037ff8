"""Shared fixtures. ``../shared`` (reference vectors, real sample files) lies beside
the checkout; without it the tests that need it are skipped locally and fail in
CI (``CI=true``), so nothing is skipped silently where it counts."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IHARM_SHARED", REPO.parent / "shared"))


def _require(path: Path) -> Path:
    if not path.exists():
        message = f"{path} is missing: the shared fixtures must lie beside the checkout (../shared)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def reference_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "reference")


@pytest.fixture(scope="session")
def shared_data(shared_dir: Path) -> Path:
    return _require(shared_dir / "data")
