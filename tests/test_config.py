"""config.yml: official keys, relative paths, errors that name the key, command line wins."""
from __future__ import annotations

from pathlib import Path

import pytest

from iharm.utils.config import DEFAULT_CONFIG, ConfigError, dataset_key, load_config, require_path

OFFICIAL_KEYS = ("MODELS_PATH", "EXPS_PATH", "HFLICKR_PATH", "HDAY2NIGHT_PATH", "HCOCO_PATH", "HADOBE5K_PATH",
                 "HADOBE5K1_PATH", "IMAGENET_PRETRAINED_MODELS")


def test_shipped_config_has_the_official_keys_and_hsynth() -> None:
    cfg = load_config()
    for key in (*OFFICIAL_KEYS, "HSYNTH_PATH", "PHOTOS_PATH"):
        assert key in cfg, key
    # relative paths resolve against the config file's folder, not the working directory
    assert Path(cfg.HCOCO_PATH) == DEFAULT_CONFIG.parent / "datasets/iHarmony4/HCOCO"
    assert set(cfg.IMAGENET_PRETRAINED_MODELS) >= {"HRNETV2_W18_SMALL", "HRNETV2_W48"}


def test_command_line_values_win(tmp_path: Path) -> None:
    cfg = load_config(overrides={"HCOCO_PATH": str(tmp_path), "batch_size": 8, "lr": None})
    assert cfg.HCOCO_PATH == str(tmp_path) and cfg.batch_size == 8 and "lr" not in cfg


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("HCOCO_PATH: ./x\nHCOCO_PAHT: ./typo\n")
    with pytest.raises(ConfigError, match=r"config\.yml: unknown key 'HCOCO_PAHT'"):
        load_config(path)


def test_wrong_type_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("EXPS_PATH: 12\n")
    with pytest.raises(ConfigError, match=r"key 'EXPS_PATH' must be a str, got int"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)


def test_missing_paths_are_named(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("HCOCO_PATH: ./nowhere\n")
    cfg = load_config(path)
    with pytest.raises(ConfigError, match=r"'HCOCO_PATH' points to .*nowhere, which does not exist"):
        require_path(cfg, "HCOCO_PATH")
    with pytest.raises(ConfigError, match=r"'HFLICKR_PATH' is not set"):
        require_path(cfg, "HFLICKR_PATH")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yml")


def test_dataset_names() -> None:
    assert dataset_key("HDay2Night") == "HDAY2NIGHT_PATH" and dataset_key("hadobe5k1") == "HADOBE5K1_PATH"
    with pytest.raises(ConfigError, match="unknown dataset 'HFoo'"):
        dataset_key("HFoo")
