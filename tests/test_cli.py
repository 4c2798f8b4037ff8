"""The one device flag set of every command (iharm.tools.cli, iharm.utils.device): the same default
everywhere, the official --gpu as an alias, one-line errors naming the flag."""
from __future__ import annotations

import argparse

import pytest
import torch

from iharm.tools.cli import add_device_arguments, device_from_args
from iharm.utils.device import gpu_flag_device, resolve_device


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_device_arguments(parser)
    return parser.parse_args(list(argv))


def test_default_is_the_gpu_when_there_is_one(monkeypatch):
    assert device_from_args(parse()) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_from_args(parse()) == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_from_args(parse()) == torch.device("cpu")


def test_official_gpu_flag_is_an_alias(monkeypatch):
    assert device_from_args(parse("--gpu", "cpu")) == torch.device("cpu")
    assert device_from_args(parse("--device", "cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_from_args(parse("--gpu", "1")) == torch.device("cuda:1")
    assert device_from_args(parse("--device", "cuda:1")) == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"--gpu 'cuda:2': only 2 CUDA device\(s\) visible"):
        device_from_args(parse("--gpu", "2"))
    with pytest.raises(SystemExit):  # one of the two, not both
        parse("--gpu", "0", "--device", "cpu")


def test_bad_devices_name_the_flag(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device 'cuda': CUDA is not available on this machine"):
        device_from_args(parse("--device", "cuda"))
    with pytest.raises(ValueError, match="--device 'tpu': expected 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        device_from_args(parse("--device", "tpu"))
    with pytest.raises(ValueError, match="--gpu x: expected a GPU index"):
        gpu_flag_device("x")
    with pytest.raises(ValueError, match="--gpu 'cuda:0': CUDA is not available"):
        gpu_flag_device("0")
    with pytest.raises(ValueError, match="device 'gpu': expected"):
        resolve_device("gpu")
