"""The CPU description every figure carries, and ``--amp auto``'s choice from it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from iharm.engine import trainer
from iharm.engine.trainer import resolve_amp
from iharm.utils import machine


def _proc_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="no /proc/cpuinfo on this system")
def test_flags_are_those_of_proc_cpuinfo() -> None:
    flags = _proc_flags()
    assert machine.kernel_flags() == {name: name in flags for name in machine.KERNEL_FLAGS}
    assert machine.native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)
    assert machine.cpu_model_and_flags()[0] in Path("/proc/cpuinfo").read_text()


def test_amp_auto_is_bf16_only_on_cuda_and_on_cpus_with_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(trainer, "native_bf16", lambda: False)
    assert (resolve_amp("auto", cpu), resolve_amp("auto", cuda)) == ("off", "bf16")
    monkeypatch.setattr(trainer, "native_bf16", lambda: True)
    assert resolve_amp("auto", cpu) == "bf16"
    for explicit in ("off", "bf16", "fp16"):  # anything else is taken as given
        assert resolve_amp(explicit, cpu) == explicit
