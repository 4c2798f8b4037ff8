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


# --- global state: every test leaves the process as it found it --------------------------------------------

#: Variables that pytest (the current test's id) and torch (its compile cache, and the address that
#: Inductor's compiled-code loader reads, both set on first use) manage.
OWN_VARIABLES = ("PYTEST_", "TORCHINDUCTOR_", "_TORCHINDUCTOR_")


def _global_state() -> dict[str, object]:
    """Process-wide settings that change numbers or speed when a test leaves them changed (thread count:
    the order of float32 sums; deterministic algorithms; default dtype; the fast-path default), plus the
    signal handlers, the environment, the working directory and the umask."""
    import signal

    import cv2
    import torch

    from iharm.model import fast_path

    return {
        "torch threads": torch.get_num_threads(),
        "cv2 threads": cv2.getNumThreads(),
        "deterministic algorithms": (torch.are_deterministic_algorithms_enabled(),
                                     torch.is_deterministic_algorithms_warn_only_enabled()),
        "default dtype": torch.get_default_dtype(),
        "grad mode": torch.is_grad_enabled(),
        "anomaly detection": torch.is_anomaly_enabled(),
        "float32 matmul precision": torch.get_float32_matmul_precision(),
        "cudnn flags": (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic),
        "mkldnn enabled": torch.backends.mkldnn.enabled,
        "fast-path default": fast_path.DEFAULT_FAST_PATH,
        "signal handlers": (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)),
        "environment": {k: v for k, v in os.environ.items() if not k.startswith(OWN_VARIABLES)},
        "working directory": os.getcwd(),
        "umask": _umask(),
    }


def _umask() -> int:
    umask = os.umask(0o022)  # read by setting it
    os.umask(umask)
    return umask


def _restore(state: dict[str, object]) -> None:
    import signal

    import cv2
    import torch

    from iharm.model import fast_path

    torch.set_num_threads(state["torch threads"])
    cv2.setNumThreads(state["cv2 threads"])
    deterministic, warn_only = state["deterministic algorithms"]
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_default_dtype(state["default dtype"])
    torch.set_grad_enabled(state["grad mode"])
    torch.autograd.set_detect_anomaly(state["anomaly detection"])
    torch.set_float32_matmul_precision(state["float32 matmul precision"])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = state["cudnn flags"]
    torch.backends.mkldnn.enabled = state["mkldnn enabled"]
    fast_path.DEFAULT_FAST_PATH = state["fast-path default"]
    signal.signal(signal.SIGINT, state["signal handlers"][0])
    signal.signal(signal.SIGTERM, state["signal handlers"][1])
    own = {k: v for k, v in os.environ.items() if k.startswith(OWN_VARIABLES)}
    os.environ.clear()
    os.environ.update({**state["environment"], **own})
    os.chdir(state["working directory"])
    os.umask(state["umask"])


def changed_global_state(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """What differs between two snapshots of :func:`_global_state`, one readable line each."""
    changes = []
    for key, value in before.items():
        if after[key] == value:
            continue
        if key == "environment":
            names = sorted(k for k in set(value) | set(after[key]) if value.get(k) != after[key].get(k))
            changes.append(f"environment variables {', '.join(names)}")
        else:
            changes.append(f"{key}: {value!r} -> {after[key]!r}")
    return changes


@pytest.fixture(autouse=True, scope="module")
def _module_leaves_global_state_unchanged(request):
    """Module-scoped fixtures (a benchmark run, a trained model) may not leak either."""
    yield from _guard(f"module {request.module.__name__}")


@pytest.fixture(autouse=True)
def _test_leaves_global_state_unchanged(request):
    """Fails the test that changed process-wide state (after restoring it), so that no later test
    runs under another thread count, dtype or flag than it would alone."""
    yield from _guard(request.node.nodeid)


def _guard(who: str):
    before = _global_state()
    yield
    after = _global_state()
    changes = changed_global_state(before, after)
    if changes:
        _restore(before)
        pytest.fail(f"{who} left global state changed: " + "; ".join(changes), pytrace=False)
