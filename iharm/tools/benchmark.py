"""Speed, memory and exactness of a registered network: the plain path against each optimisation.

One run measures one model in every *case* (inference, or a full training
step: forward, loss, backward, optimizer; at an image size and a batch size)
under every *variant*, side by side:

* ``plain``: the official algorithm as the official code runs it: eager,
  float32, NCHW, no fast path (``set_fast_path(model, False)``), and for
  inference one image at a time;
* ``fast``: what the library uses by default (the exact fast path, channels_last,
  the whole batch in one forward);
* ``fast+bf16``: the same under bfloat16 autocast (not exact);
* ``fast+compile``: the same under ``torch.compile``, with the options a graph can hold
  (no mask-box crop, :func:`~iharm.model.fast_path.runnable_on`; opt-in; compile time reported);
* ``plain+<option>``: the plain path plus one change, to attribute the gain.

For each it reports the wall-clock latency (median, min, max, quartiles over
repeated calls after warm-up; the variants interleaved call by call, so that
load changes on a shared machine hit all of them alike), the process CPU time
(less sensitive to other processes), throughput, the speed-up over ``plain``,
exactness against ``plain`` (max abs output difference in the model's output
space for inference; relative loss and gradient differences after one step
from the same weights for training), the plain path's own float32 rounding on
this machine (its distance to the same call in float64, the scale those
differences are judged by), MACs (convolutions and matmuls,
``torch.utils.flop_counter`` FLOPs / 2) and the peak memory: on the CPU the
process's peak RSS minus its RSS after building the model and inputs, on CUDA
``max_memory_allocated`` minus what was allocated before, each measured in a
fresh process (``python -m iharm.tools.benchmark '<probe json>'``) so that peaks
do not mix.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from iharm.inference.utils import load_model
from iharm.model.bargainnet_losses import LAMBDA_TRI, BargainNetL1, DomainTripletLoss
from iharm.model.fast_path import DEFAULT_FAST_PATH, FastPath, adapt_fast_path, fast_path_options, set_fast_path
from iharm.model.losses import MaskWeightedMSE
from iharm.model.registry import ModelSpec, get_model_spec, place_model
from iharm.utils.machine import cpu_model_and_flags, kernel_flags
from iharm.utils.threads import thread_count

SCHEMA = "iharm-benchmark/1"
TASKS = ("infer", "train")
PRECISIONS = {"float32": None, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    """What is timed: ``task`` ('infer' or 'train') on ``batch`` images of ``size`` x ``size``."""

    task: str
    size: int
    batch: int

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")

    @property
    def label(self) -> str:
        return f"{self.task} {self.size}px b{self.batch}"


@dataclass(frozen=True)
class Variant:
    """How it runs: fast-path options, memory format, one image at a time or batched, precision, compile.

    ``as_loaded``: the model in the layout ``create_model`` / ``load_model`` gives it
    (:func:`~iharm.model.registry.place_model`), called with ordinary contiguous inputs,
    as a user calls it."""

    name: str
    fast_path: FastPath
    channels_last: bool = False
    per_image: bool = False
    precision: str = "float32"
    compiled: bool = False
    as_loaded: bool = False

    def describe(self) -> dict[str, Any]:
        return {"fast_path": asdict(self.fast_path), "channels_last": self.channels_last,
                "per_image": self.per_image, "precision": self.precision, "compiled": self.compiled,
                "as_loaded": self.as_loaded}


#: The baseline: the algorithm op for op as the official code runs it.
PLAIN = Variant("plain", FastPath.plain(), per_image=True)
#: The library default on the CPU (Predictor: fast path, channels_last, batched).
FAST = Variant("fast", DEFAULT_FAST_PATH, channels_last=True)
FAST_BF16 = replace(FAST, name="fast+bf16", precision="bf16")
FAST_COMPILED = replace(FAST, name="fast+compile", compiled=True)
#: The official call: ``load_model(...)`` then ``model(image, mask, image_lab=...)`` on contiguous tensors.
OFFICIAL_CALL = Variant("load_model call", DEFAULT_FAST_PATH, per_image=True, as_loaded=True)


def ablation_variants(model: nn.Module, case: Case) -> list[Variant]:
    """The plain path plus one change each: every fast-path option ``model`` uses, channels_last,
    and (batched inference only) the whole batch in one forward."""
    # The fast path's channels_last option is the layout, which plain+channels_last measures
    # (parameters and inputs); the others one by one.
    variants = [replace(PLAIN, name=f"plain+{option}", fast_path=FastPath.only(option))
                for option in fast_path_options(model) if option != "channels_last"]
    variants.append(replace(PLAIN, name="plain+channels_last", channels_last=True))
    if case.task == "infer" and case.batch > 1:
        variants.append(replace(PLAIN, name="plain+batched", per_image=False))
    return variants


#: The default matrix: inference at batch 1 and 4, training steps, 256 / 1024 / 2048 px (inference only).
DEFAULT_CASES = (Case("infer", 256, 1), Case("infer", 256, 4), Case("train", 256, 1), Case("train", 256, 4),
                 Case("infer", 1024, 1), Case("train", 1024, 1), Case("infer", 2048, 1))


def training_losses(model_name: str) -> list[tuple[nn.Module, float]]:
    """(loss, weight) pairs of the model's official training recipe (models/<name>_256.py)."""
    if model_name == "BargainNet":
        return [(BargainNetL1(), 1.0), (DomainTripletLoss(distance="euclidean"), LAMBDA_TRI)]
    return [(MaskWeightedMSE(min_area=100 if model_name == "DucoNet" else 1000), 1.0)]


def make_batch(spec: ModelSpec, case: Case, seed: int) -> dict[str, torch.Tensor]:
    """Seeded synthetic inputs in the collated-batch format (uint8 images, float masks).

    As in the official CPU timings, the mask is a centred square of half the
    side (a quarter of the area): the mask-box fast paths gain less on larger
    masks and more on smaller ones.
    """
    generator = torch.Generator().manual_seed(seed)
    shape = (case.batch, 3, case.size, case.size)
    batch = {key: torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
             for key in ("images", "target_images", "images_lab")}
    masks = torch.zeros(case.batch, 1, case.size, case.size)
    quarter = case.size // 4
    masks[..., quarter:case.size - quarter, quarter:case.size - quarter] = 1.0
    batch["masks"] = masks
    return batch


def build_model(spec: ModelSpec, checkpoint: str | None, seed: int) -> nn.Module:
    """The network with the checkpoint's weights (loaded strictly) or its seeded constructor init."""
    if checkpoint is not None:
        return load_model(spec.name, checkpoint)
    torch.manual_seed(seed)
    return spec.build()


def _widen(x: torch.Tensor) -> torch.Tensor:
    """Low-precision (autocast) results as float32; float32 and float64 results as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class Workload:
    """One case under one variant: its own copy of the model (and optimizer) and inputs; ``run()``
    does one timed call and returns the output (inference) or the loss (training)."""

    def __init__(self, spec: ModelSpec, model: nn.Module, case: Case, variant: Variant,
                 batch: Mapping[str, torch.Tensor], device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.spec, self.case, self.variant, self.device = spec, case, variant, device
        memory_format = torch.channels_last if variant.channels_last else torch.contiguous_format
        self.model = set_fast_path(copy.deepcopy(model), variant.fast_path).to(device, dtype, memory_format=memory_format)
        if variant.as_loaded:
            place_model(self.model, device)
        self.model.train(case.task == "train")
        self.inputs = {k: v.to(dtype) for k, v in spec.prepare_batch(batch, device, memory_format).items()}
        self.losses = training_losses(spec.name) if case.task == "train" else []
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4) if case.task == "train" else None
        if variant.compiled:  # the options a graph can hold (no mask-box crop), one graph for the case's shape
            adapt_fast_path(self.model, device, compiled=True)
        self.forward = torch.compile(self.model, dynamic=False, fullgraph=True) if variant.compiled else self.model
        dtype = PRECISIONS[variant.precision]
        self._autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else nullcontext

    def run(self) -> torch.Tensor:
        result = self._train_step() if self.case.task == "train" else self._infer()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return result

    def _infer(self) -> torch.Tensor:
        with torch.inference_mode(), self._autocast():
            if not self.variant.per_image:
                return _widen(self.forward(**self.spec.forward_kwargs(self.inputs))["images"])
            return torch.cat([_widen(self.forward(**self.spec.forward_kwargs(
                {k: v[i:i + 1] for k, v in self.inputs.items()}))["images"]) for i in range(self.case.batch)])

    def _train_step(self) -> torch.Tensor:
        with self._autocast():
            output = self.forward(**self.spec.forward_kwargs(self.inputs, training=True))
            loss = sum(weight * loss_fn(*[output[k] for k in loss_fn.pred_outputs],
                                        *[self.inputs[k] for k in loss_fn.gt_outputs]).mean()
                       for loss_fn, weight in self.losses)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return _widen(loss.detach())

    def gradients(self) -> torch.Tensor:
        """All parameter gradients of the last step, flattened (zeros where a parameter got none)."""
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().double().flatten().cpu()
                          for p in self.model.parameters()])


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and quartiles of repeated measurements (seconds)."""
    ordered = sorted(values)
    q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive") if len(ordered) > 1 else ordered * 3
    return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1], "q1": q1, "q3": q3,
            "n": len(ordered)}


def time_interleaved(calls: Mapping[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Wall and process-CPU seconds of ``repeats`` calls of each, interleaved round by round."""
    times = {name: {"wall": [], "cpu": []} for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            wall, cpu = time.perf_counter(), time.process_time()
            call()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times


def _fused_conv_flops(x_shape: list[int], w_shape: list[int], *args: Any, out_shape: list[int] | None = None,
                      **kwargs: Any) -> int:
    return conv_flop_count(x_shape, w_shape, out_shape)


#: FlopCounterMode does not know the fused oneDNN conv + activation of the fast path; it is a convolution.
_EXTRA_FLOP_FORMULAS = ({torch.ops.mkldnn._convolution_pointwise: _fused_conv_flops}
                        if hasattr(torch.ops.mkldnn, "_convolution_pointwise") else {})


def counted_call(call: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    """One call and its MACs in billions (convolutions and matmuls: FlopCounterMode FLOPs / 2)."""
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter:
        result = call()
    return result, counter.get_total_flops() / 2e9


# --- memory ---------------------------------------------------------------------------------------

def _status_mib(field_name: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"/proc/self/status has no {field_name}")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def probe_memory(probe: Mapping[str, Any]) -> dict[str, Any]:
    """Peak memory of one case under one variant, in this process (run it in a fresh one).

    CPU: RSS after building the model and the inputs (idle), then the peak
    RSS over a warm-up call and a measured call; the difference is what the
    call needs. CUDA: ``max_memory_allocated`` minus the allocation before.
    """
    with thread_count(probe["threads"]):
        return _probe_memory(probe)


def _probe_memory(probe: Mapping[str, Any]) -> dict[str, Any]:
    spec = get_model_spec(probe["model"])
    case = Case(**probe["case"])
    variant = Variant(probe["variant"]["name"], FastPath(**probe["variant"]["fast_path"]),
                      **{k: v for k, v in probe["variant"].items() if k not in ("name", "fast_path")})
    device = torch.device(probe["device"])
    workload = Workload(spec, build_model(spec, probe["checkpoint"], probe["seed"]), case, variant,
                        make_batch(spec, case, probe["seed"]), device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        idle = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        workload.run()
        workload.run()
        return {"peak_mib": (torch.cuda.max_memory_allocated(device) - idle) / 2 ** 20,
                "method": "cuda max_memory_allocated - allocated before"}
    # The baseline is the peak mark itself, read just after its reset: VmRSS and VmHWM come from counters
    # the kernel syncs at different times, so subtracting one from the other read a tiny call's figure
    # below zero (-0.1 MiB in CI).
    reset = _reset_peak_rss()
    idle = _status_mib("VmRSS")
    if reset:
        method, read_peak = "VmHWM after the calls - VmHWM reset after build", lambda: _status_mib("VmHWM")
        baseline = read_peak()
    else:
        method = "ru_maxrss - VmRSS after build (the peak may include the build)"
        read_peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731
        baseline = idle
    workload.run()
    workload.run()
    return {"peak_mib": read_peak() - baseline, "idle_mib": idle, "method": method}


def measure_memory(settings: Settings, case: Case, variant: Variant) -> dict[str, Any]:
    """:func:`probe_memory` in a fresh Python process with the same threads and seed."""
    probe = {"model": settings.model, "checkpoint": settings.checkpoint, "seed": settings.seed,
             "device": settings.device, "threads": settings.threads, "case": asdict(case),
             "variant": {"name": variant.name, **variant.describe()}}
    env = {**os.environ, "OMP_NUM_THREADS": str(settings.threads), "MKL_NUM_THREADS": str(settings.threads)}
    done = subprocess.run([sys.executable, "-m", "iharm.tools.benchmark", json.dumps(probe)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the run --------------------------------------------------------------------------------------

@dataclass
class Settings:
    """What to benchmark and how (the options of scripts/benchmark.py)."""

    model: str
    cases: Sequence[Case] = DEFAULT_CASES
    checkpoint: str | None = None
    device: str = "cpu"
    threads: int = 2
    seed: int = 0
    warmup: int = 1
    repeats: int = 7
    memory: bool = True
    bf16: bool = True
    compile: bool = False
    ablation_max_size: int = 256

    def repeats_for(self, case: Case) -> int:
        """``repeats`` calls up to 256 px, fewer for bigger images (by pixel count), at least 2."""
        return max(2, min(self.repeats, round(self.repeats * (256 / case.size) ** 2)))

    def variants_for(self, model: nn.Module, case: Case) -> list[Variant]:
        variants = [PLAIN, FAST]
        if case.task == "infer":
            variants.append(OFFICIAL_CALL)
        if self.bf16:
            variants.append(FAST_BF16)
        if self.compile:
            variants.append(FAST_COMPILED)
        if case.size <= self.ablation_max_size:
            variants.extend(ablation_variants(model, case))
        return variants


def system_info(settings: Settings) -> dict[str, Any]:
    """The machine, the software and the thread settings the numbers were taken with."""
    cpu_model = cpu_model_and_flags()[0]
    onednn = re.search(r"MKL-DNN v([\d.]+)", torch.__config__.show())
    info = {
        "device": settings.device, "cpu_model": cpu_model, "logical_cpus": os.cpu_count(),
        "cpu_features": kernel_flags(),
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__, "onednn": onednn.group(1) if onednn else None,
        "python": platform.python_version(), "platform": platform.platform(),
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY",
                                                   "KMP_BLOCKTIME", "GOMP_SPINCOUNT") if k in os.environ},
    }
    if settings.device.startswith("cuda"):
        info["cuda_device"] = torch.cuda.get_device_name(torch.device(settings.device))
    return info


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double().cpu() - b.double().cpu()).abs().max().item()


def run_case(settings: Settings, spec: ModelSpec, model: nn.Module, case: Case,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every variant of one case: correctness and MACs on the first call, then interleaved timing."""
    device = torch.device(settings.device)
    batch = make_batch(spec, case, settings.seed)
    record: dict[str, Any] = {**asdict(case), "load_average": [os.getloadavg()[0]], "variants": []}
    workloads, first = {}, {}
    plain_gradients = None
    for variant in settings.variants_for(model, case):
        entry: dict[str, Any] = {"variant": variant.name, **variant.describe()}
        record["variants"].append(entry)
        try:
            workload = Workload(spec, model, case, variant, batch, device)
            torch.manual_seed(settings.seed)  # the same dropout draws (BargainNet) in every variant's first call
            start = time.perf_counter()
            if variant.compiled:  # compilation happens on the first call; count MACs on the eager model
                first[variant.name] = workload.run()
                entry["compile_s"] = time.perf_counter() - start
            else:
                first[variant.name], entry["macs_g"] = counted_call(workload.run)
            _compare_first_call(entry, case, variant, workload, first, plain_gradients)
            if variant is PLAIN:
                plain_gradients = workload.gradients() if case.task == "train" else None
                entry["float32_noise"] = float32_noise(spec, model, case, batch, device, settings.seed,
                                                       first[PLAIN.name], plain_gradients)
            for _ in range(settings.warmup):
                workload.run()
        except (RuntimeError, MemoryError) as error:
            entry["error"] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
            log(f"  {case.label} {variant.name}: {entry['error']}")
            continue
        workloads[variant.name] = workload

    times = time_interleaved({name: w.run for name, w in workloads.items()}, settings.repeats_for(case))
    for entry in record["variants"]:
        if entry["variant"] not in times:
            continue
        entry["latency_s"] = summarize(times[entry["variant"]]["wall"])
        entry["cpu_s"] = summarize(times[entry["variant"]]["cpu"])
        entry["throughput_ips"] = case.batch / entry["latency_s"]["median"]
    workloads.clear()
    if settings.memory:
        for entry in record["variants"]:
            if "error" not in entry:
                variant = next(v for v in settings.variants_for(model, case) if v.name == entry["variant"])
                entry["memory"] = measure_memory(settings, case, variant)
    _add_ratios(record)
    record["load_average"].append(os.getloadavg()[0])
    return record


def _differences(case: Case, result: torch.Tensor, gradients: torch.Tensor | None, reference: torch.Tensor,
                 reference_gradients: torch.Tensor | None) -> dict[str, float]:
    """How far one first call lies from another: the output's greatest difference (inference), or the loss's
    and the gradient's relative differences (training)."""
    if case.task == "infer":
        return {"max_abs_diff": _max_abs_diff(result, reference)}
    return {"loss_rel_diff": abs(result.item() - reference.item()) / abs(reference.item()),
            "grad_rel_diff": ((gradients - reference_gradients).norm() / reference_gradients.norm()).item()}


def float32_noise(spec: ModelSpec, model: nn.Module, case: Case, batch: Mapping[str, torch.Tensor],
                  device: torch.device, seed: int, plain: torch.Tensor, plain_gradients: torch.Tensor | None
                  ) -> dict[str, float]:
    """The plain path's float32 rounding on this machine: its distance to the same first call in float64.

    Exact variants are judged against this (within a small multiple), not against
    a tolerance fitted on one CPU: rounding differs with the CPU's kernels and threads.
    """
    workload = Workload(spec, model, case, PLAIN, batch, device, dtype=torch.float64)
    torch.manual_seed(seed)
    exact = workload.run()
    return _differences(case, plain, plain_gradients, exact, workload.gradients() if case.task == "train" else None)


def _compare_first_call(entry: dict[str, Any], case: Case, variant: Variant, workload: Workload,
                        first: Mapping[str, torch.Tensor], plain_gradients: torch.Tensor | None) -> None:
    """Exactness of a variant's first call (same weights, same inputs) against the plain one."""
    if case.task == "train":
        entry["loss"] = first[variant.name].item()
    if variant is PLAIN or PLAIN.name not in first:
        return
    gradients = workload.gradients() if case.task == "train" else None
    entry.update(_differences(case, first[variant.name], gradients, first[PLAIN.name], plain_gradients))


def _add_ratios(record: dict[str, Any]) -> None:
    """Speed-ups (wall and CPU medians) and memory ratios against the plain variant of the case."""
    plain = next((e for e in record["variants"] if e["variant"] == PLAIN.name and "latency_s" in e), None)
    if plain is None:
        return
    for entry in record["variants"]:
        if "latency_s" in entry:
            entry["speedup"] = plain["latency_s"]["median"] / entry["latency_s"]["median"]
            entry["cpu_speedup"] = plain["cpu_s"]["median"] / entry["cpu_s"]["median"]
        peak, plain_peak = (e.get("memory", {}).get("peak_mib") for e in (entry, plain))
        if peak is not None and plain_peak:
            entry["memory_ratio"] = peak / plain_peak


def run_benchmark(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every case of ``settings``; returns the JSON-ready result (see :data:`SCHEMA`)."""
    with thread_count(settings.threads):
        return _run_benchmark(settings, log)


def _run_benchmark(settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    spec = get_model_spec(settings.model)
    model = build_model(spec, settings.checkpoint, settings.seed)
    result = {
        "schema": SCHEMA, "model": settings.model, "started": datetime.now().isoformat(timespec="seconds"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "settings": {**asdict(settings), "cases": [asdict(c) for c in settings.cases]},
        "system": system_info(settings),
        "notes": {"latency": "wall-clock seconds per call, variants interleaved call by call",
                  "max_abs_diff": "max |output - plain output| in the model's output space (normalised)",
                  "float32_noise": "the plain variant's distance to its own float64 run (same measures): the "
                                   "float32 rounding of this machine, the scale for the exact variants' differences",
                  "memory": "peak minus idle after model build, fresh process per case and variant",
                  "macs_g": "multiply-accumulates of convolutions and matmuls (FlopCounterMode / 2), "
                            "forward + backward for training",
                  "inputs": "seeded random uint8 images, centred square mask of half the side"},
        "cases": [],
    }
    for case in settings.cases:
        log(f"{case.label} ...")
        result["cases"].append(run_case(settings, spec, model, case, log))
        log(format_case(result["cases"][-1]))
    result["finished"] = datetime.now().isoformat(timespec="seconds")
    return result


# --- end to end -----------------------------------------------------------------------------------

#: Resize strategies of the end-to-end figure.
END_TO_END_STRATEGIES = ("Fixed256", "LimitLongest1024")


def has_test_split(dataset: Path) -> bool:
    return any(dataset.glob("*_test.txt"))


def subset_view(dataset: Path, count: int, root: Path) -> Path:
    """An iHarmony4-layout view of ``count`` test images of ``dataset`` spread evenly over its test
    list (symbolic links to its image folders and a shortened list), for a shorter end-to-end run."""
    from iharm.data.layout import find_list

    lines = [line.strip() for line in find_list(dataset, "test").read_text().splitlines() if line.strip()]
    chosen = lines[::max(1, len(lines) // count)][:count]
    view = root / f"{dataset.name}Subset"
    view.mkdir(parents=True, exist_ok=True)
    for sub in ("composite_images", "masks", "real_images"):
        (view / sub).symlink_to((dataset / sub).resolve(), target_is_directory=True)
    (view / f"{view.name}_test.txt").write_text("".join(line + "\n" for line in chosen))
    return view


def make_photo_test_set(root: Path, count: int = 16, longest_side: int = 1024) -> Path:
    """An iHarmony4-layout test set from scikit-image's photos at a realistic size (longest side
    ``longest_side``), with ellipse masks of varied size and place and a colour gain inside them
    (the tests/tiny_data.py recipe); for the end-to-end figure where no HSynth test split exists."""
    import cv2
    import numpy as np
    from skimage import data as skdata

    from iharm.data.hsynth.imageops import write_png
    from iharm.data.io import write_image

    folder = root / "PhotoTest"
    for sub in ("composite_images", "masks", "real_images"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    photos = ("astronaut", "coffee", "chelsea", "rocket")
    for i in range(count):
        real = getattr(skdata, photos[i % len(photos)])()
        scale = longest_side / max(real.shape[:2])
        real = cv2.resize(real, (round(real.shape[1] * scale), round(real.shape[0] * scale)),
                          interpolation=cv2.INTER_CUBIC)
        height, width = real.shape[:2]
        mask = np.zeros((height, width), np.uint8)
        axes = (int(width * rng.uniform(0.08, 0.3)), int(height * rng.uniform(0.08, 0.3)))
        center = (int(width * rng.uniform(0.3, 0.7)), int(height * rng.uniform(0.3, 0.7)))
        cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
        gain = rng.uniform(0.75, 1.25, 3).astype(np.float32)
        composite = np.where(mask[..., None] > 127, np.clip(real * gain, 0, 255).round().astype(np.uint8), real)
        write_image(folder / "real_images" / f"p{i}.jpg", real)
        write_png(folder / "masks" / f"p{i}_1.png", mask)
        write_image(folder / "composite_images" / f"p{i}_1_1.jpg", composite)
        names.append(f"p{i}_1_1.jpg")
    (folder / "PhotoTest_test.txt").write_text("".join(name + "\n" for name in names))
    return folder


def end_to_end(settings: Settings, dataset: Path, strategies: Sequence[str] = END_TO_END_STRATEGIES,
               log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Images per second of the whole evaluation loop, data loading included, and its metrics.

    ``evaluate_model.py``'s loop (:func:`~iharm.inference.evaluation.evaluate_dataset`:
    DataLoader workers, equal-size batches, the default Predictor: fast path and
    channels_last on the CPU; with ``settings.bf16`` also in bf16) against the
    official way of running it: one image at a time, read in the main process,
    plain path, NCHW. Same weights and images; the input composite's metrics
    (the identity "model") are given for reference.
    """
    with thread_count(settings.threads):
        return _end_to_end(settings, dataset, strategies, log)


def _end_to_end(settings: Settings, dataset: Path, strategies: Sequence[str],
                log: Callable[[str], None]) -> list[dict[str, Any]]:
    from iharm.inference.evaluation import EvaluationSettings, evaluate_dataset
    from iharm.inference.predictor import CompositePredictor, Predictor
    from iharm.inference.report import accumulate

    spec = get_model_spec(settings.model)
    model = build_model(spec, settings.checkpoint, settings.seed)
    device = torch.device(settings.device)
    runs = [("composite (identity)", lambda: CompositePredictor(device), {"batch_size": 1, "workers": 0}),
            ("one image at a time, plain", lambda: Predictor(set_fast_path(copy.deepcopy(model), False), spec, device,
                                                             channels_last=False), {"batch_size": 1, "workers": 0}),
            ("evaluate_model.py defaults, fast", lambda: Predictor(copy.deepcopy(model), spec, device), {})]
    if settings.bf16:
        runs.append(("evaluate_model.py defaults, fast bf16",
                     lambda: Predictor(copy.deepcopy(model), spec, device, precision="bf16"), {}))
    records = []
    for strategy in strategies:
        for name, make_predictor, options in runs:
            load = os.getloadavg()[0]
            result = evaluate_dataset(make_predictor(), dataset, dataset.name,
                                      EvaluationSettings(resize_strategy=strategy, **options), progress=False)
            records.append({"strategy": strategy, "run": name, "options": options, "images": len(result.images),
                            "wall_s": result.wall_seconds, "images_per_second": result.images_per_second,
                            "metrics": accumulate(result.images).summary(),
                            "load_average": [load, os.getloadavg()[0]]})
            log(f"  {strategy:<17} {name:<36} {records[-1]['images_per_second']:6.2f} img/s  "
                f"PSNR {records[-1]['metrics']['PSNR']:.4f}  fMSE {records[-1]['metrics']['fMSE']:.3f}")
    return records


# --- reporting ------------------------------------------------------------------------------------

def format_case(record: Mapping[str, Any]) -> str:
    """A readable table of one case: one row per variant."""
    header = (f"{'variant':<26} {'median s':>9} {'min-max s':>15} {'img/s':>7} {'speed-up':>8} {'cpu x':>6} "
              f"{'peak MiB':>9} {'mem x':>6} {'GMACs':>7} {'exactness':>16}")
    load = "-".join(f"{x:.1f}" for x in record["load_average"])
    lines = [f"{record['task']} {record['size']}px batch {record['batch']} (load average {load})", header]
    for entry in record["variants"]:
        if "error" in entry:
            lines.append(f"{entry['variant']:<26} {entry['error']}")
            continue
        latency = entry.get("latency_s", {})
        noise = entry.get("float32_noise", {})
        exact = (f"grad {entry['grad_rel_diff']:.1e}" if "grad_rel_diff" in entry
                 else f"|d| {entry['max_abs_diff']:.1e}" if "max_abs_diff" in entry
                 else f"f32 noise {noise.get('grad_rel_diff', noise.get('max_abs_diff', float('nan'))):.1e}")
        lines.append(
            f"{entry['variant']:<26} {latency.get('median', float('nan')):>9.3f} "
            f"{latency.get('min', float('nan')):>7.3f}-{latency.get('max', float('nan')):<7.3f} "
            f"{entry.get('throughput_ips', float('nan')):>7.2f} {entry.get('speedup', float('nan')):>7.2f}x "
            f"{entry.get('cpu_speedup', float('nan')):>5.2f}x "
            f"{entry.get('memory', {}).get('peak_mib', float('nan')):>9.0f} {entry.get('memory_ratio', float('nan')):>6.2f} "
            f"{entry.get('macs_g', float('nan')):>7.1f} {exact:>16}")
    return "\n".join(lines)


def format_report(result: Mapping[str, Any]) -> str:
    """The whole run: the machine and settings, then one table per case."""
    system = result["system"]
    head = [f"{result['model']}: {result['parameters']:,} parameters; {system['device']} {system['cpu_model']}, "
            f"{system['threads']} threads, torch {system['torch']} (oneDNN {system['onednn']}); "
            f"bf16 hardware: {system['cpu_features'].get('avx512_bf16') or system['cpu_features'].get('amx_bf16')}; "
            f"thread env {system['thread_env'] or '{}'}"]
    return "\n\n".join(head + [format_case(case) for case in result["cases"]])


if __name__ == "__main__":  # the memory probe of measure_memory, in a fresh process
    print(json.dumps(probe_memory(json.loads(sys.argv[1]))))
