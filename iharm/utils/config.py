"""Loading ``config.yml``: known keys only, typed, command line wins.

The official loader merged every ``config.yml`` it found and let the file win
over the command line, so a flag could be silently ignored. Here the schema is
explicit: an unknown key or a value of the wrong type is an error that names
the key and the file, before any work starts; relative paths are resolved
against the config file's folder; and overrides (from the command line) win.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from easydict import EasyDict

from iharm.errors import IharmError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "config.yml"

#: Dataset names as the scripts accept them (``--datasets HFlickr,HCOCO``) -> config key.
DATASET_KEYS: Mapping[str, str] = {
    "HFlickr": "HFLICKR_PATH",
    "HDay2Night": "HDAY2NIGHT_PATH",
    "HCOCO": "HCOCO_PATH",
    "HAdobe5k": "HADOBE5K_PATH",
    "HAdobe5k1": "HADOBE5K1_PATH",
    "IHD": "IHD_PATH",
    "HSynth": "HSYNTH_PATH",
}

PATH_KEYS = ("MODELS_PATH", "EXPS_PATH", "PHOTOS_PATH", *dict.fromkeys(DATASET_KEYS.values()))
KNOWN_KEYS: Mapping[str, type] = {**{key: str for key in PATH_KEYS}, "IMAGENET_PRETRAINED_MODELS": dict}


class ConfigError(IharmError, ValueError):
    """The configuration is unusable; the message names the key and the file."""


def _resolve(value: str, base: Path) -> str:
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else (base / path).resolve())


def load_config(path: str | os.PathLike | None = None,
                overrides: Mapping[str, Any] | None = None) -> EasyDict:
    """Read and validate a config file, then apply ``overrides`` (which win).

    Overrides with value ``None`` are ignored, so an argparse namespace can be
    passed as ``vars(args)`` and only flags the user gave take effect.
    """
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    base = path.resolve().parent
    cfg: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in KNOWN_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}' (known keys: {', '.join(KNOWN_KEYS)})")
        expected = KNOWN_KEYS[key]
        if not isinstance(value, expected):
            raise ConfigError(f"{path}: key '{key}' must be a {expected.__name__}, "
                              f"got {type(value).__name__} ({value!r})")
        if key in PATH_KEYS:
            value = _resolve(value, base)
        elif key == "IMAGENET_PRETRAINED_MODELS":
            value = {name: _resolve(str(p), base) for name, p in value.items()}
        cfg[key] = value
    for key, value in (overrides or {}).items():
        if value is not None:
            cfg[key] = _resolve(str(value), Path.cwd()) if key in PATH_KEYS else value
    cfg["CONFIG_PATH"] = str(path.resolve())
    return EasyDict(cfg)


def dataset_key(name: str) -> str:
    """Config key of a dataset name (``HFlickr`` -> ``HFLICKR_PATH``), case-insensitive."""
    for known, key in DATASET_KEYS.items():
        if name.lower() == known.lower():
            return key
    raise ConfigError(f"unknown dataset '{name}' (known: {', '.join(DATASET_KEYS)})")


def require_path(cfg: Mapping[str, Any], key: str) -> Path:
    """The existing path stored under ``key``; the error names the key and the config."""
    source = cfg.get("CONFIG_PATH", "config")
    if key not in cfg or not cfg[key]:
        raise ConfigError(f"{source}: '{key}' is not set; add it to the config or pass it on the command line")
    path = Path(cfg[key])
    if not path.exists():
        raise ConfigError(f"{source}: '{key}' points to {path}, which does not exist")
    return path
