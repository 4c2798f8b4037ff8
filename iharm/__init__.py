"""iharm: deep image harmonization (DucoNet, BargainNet, iSSAM) on iHarmony4.

The one-call API (:mod:`iharm.api`)::

    from iharm import Harmonizer, harmony_score
    result = Harmonizer("DucoNet", "weights.pth")(image, mask)
"""
from typing import Any

__version__ = "0.1.0"
__all__ = ["Harmonizer", "harmony_score"]


def __getattr__(name: str) -> Any:
    # Imported on first use: ``import iharm.data`` and the command-line tools need not load the API.
    if name in __all__:
        from iharm import api
        return getattr(api, name)
    raise AttributeError(f"module 'iharm' has no attribute {name!r}")
