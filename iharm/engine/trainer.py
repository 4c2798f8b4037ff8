"""The training loop that every model script runs (one process or many).

``SimpleHTrainer`` keeps the shape of the iSSAM / DucoNet trainer (model
script builds model, losses, datasets and optimizer parameters; the trainer
runs ``training(epoch)`` and ``validation(epoch)``) and adds what long runs on
shared machines need: DistributedDataParallel, AMP, exact resume from an
atomically written training state, a non-finite-loss stop that keeps the last
good checkpoint, graceful stops on SIGTERM / Ctrl-C and on step or time limits,
and reporting of skipped bad samples.

Files, under the experiment folder:
``checkpoints/last_checkpoint.pth`` (every epoch), ``checkpoints/best_checkpoint.pth``
(the weights of the lowest validation fMSE so far, with ``best_checkpoint.json``
saying which epoch and fMSE; kept across a resume), ``checkpoints/NNN.pth``
(every ``checkpoint_interval`` epochs), ``checkpoints/tMMMmin.pth`` (every
``snapshot_minutes`` of training time, for quality-against-time curves): bare
state dicts, the official format;
``checkpoints/training_state.pth`` (every epoch, every ``--state-every``
steps or minutes, and when stopping); ``logs/`` (log file, TensorBoard
events, skipped samples); ``vis/train/NNNNNN_reconstruction.jpg``.
"""
from __future__ import annotations

import inspect
import json
import math
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import cv2
import torch
from easydict import EasyDict
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, Sampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from iharm.data.hdataset import BaseHDataset, collate_samples
from iharm.data.sampler import EpochBatches, SeededSampler
from iharm.engine.clock import TrainingClock
from iharm.engine.distributed import DistInfo, any_rank, average_buffers, broadcast_buffers, gather_objects
from iharm.engine.options import TrainOptions
from iharm.engine.throughput import EpochThroughput
from iharm.engine.training_state import (STATE_FILE, Position, capture_rng, load_training_state, rank_rng,
                                         restore_rng, save_training_state, seed_everything, trained_seconds)
from iharm.engine.visualize import harmonization_strip, save_strip
from iharm.model.checkpoints import clean_state_dict, load_state_dict_file, load_weights, save_atomic
from iharm.model.fast_path import adapt_fast_path
from iharm.model.registry import ModelSpec
from iharm.utils.config import ConfigError
from iharm.utils.files import atomic_write_text
from iharm.utils.log import logger
from iharm.utils.machine import cpu_model_and_flags, native_bf16
from iharm.utils.metrics import MetricsAccumulator, MetricVariant, format_table, image_metrics

LAST_CHECKPOINT = "last_checkpoint.pth"
BEST_CHECKPOINT = "best_checkpoint.pth"
#: The progress bar shows the loss every this many steps (reading it waits for a GPU to finish the step).
PROGRESS_EVERY = 10


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; nothing was written after the last good step."""


class TrainingAborted(RuntimeError):
    """Ctrl-C twice: the run ends at once, without saving; the message says what was lost."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM or Ctrl-C: a resumable state was saved before stopping."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


def _worker_init(worker_id: int) -> None:
    # Ctrl-C goes to the whole process group; workers leave it to the main process,
    # which stops at a step boundary. cv2 threads would oversubscribe the cores.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def resolve_amp(amp: str, device: torch.device) -> str:
    """``--amp auto`` as the precision it means on ``device``: bf16 on CUDA and on CPUs that compute bf16
    natively (where it made a DucoNet training step 4.1x faster), off elsewhere (it is slower than fp32
    there); any other value as given."""
    if amp != "auto":
        return amp
    chosen = "bf16" if device.type == "cuda" or native_bf16() else "off"
    logger.info("--amp auto: %s on this %s", chosen, device.type if device.type == "cuda" else cpu_model_and_flags()[0])
    return chosen


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


class SimpleHTrainer:
    """Trains ``model`` on ``trainset`` with the losses of ``loss_cfg``.

    ``loss_cfg`` follows the iSSAM convention: every key ``<name>_loss`` is a
    loss object with ``pred_outputs`` / ``gt_outputs`` and an optional
    ``<name>_loss_weight`` (default 1.0). ``model_cfg.spec`` is the model's
    :class:`~iharm.model.registry.ModelSpec` (inputs and normalisation).
    ``cfg`` holds the experiment paths, the distributed set-up (``cfg.dist``)
    and the run's :class:`~iharm.engine.options.TrainOptions` (``cfg.options``).
    """

    def __init__(self, model: nn.Module, cfg: EasyDict, model_cfg: EasyDict, loss_cfg: Mapping[str, Any],
                 trainset: BaseHDataset, valset: BaseHDataset | None,
                 optimizer: str = "adam", optimizer_params: Mapping[str, Any] | None = None,
                 lr_scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
                 checkpoint_interval: int = 10, image_dump_interval: int = 1000,
                 metric_variant: MetricVariant = MetricVariant(), scheduler_interval: str = "epoch",
                 snapshot_minutes: float = 0.0) -> None:
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        self.cfg = cfg
        self.options: TrainOptions = cfg.options
        self.dist: DistInfo = cfg.dist
        self.device = self.dist.device
        self.spec: ModelSpec = model_cfg.spec
        self.losses = {name: loss for name, loss in loss_cfg.items() if name.endswith("_loss")}
        self.loss_weights = {name: float(loss_cfg.get(f"{name}_weight", 1.0)) for name in self.losses}
        self.checkpoint_interval = checkpoint_interval
        self.image_dump_interval = image_dump_interval
        self.scheduler_interval = scheduler_interval
        self.snapshot_minutes = float(snapshot_minutes)
        self._snapshots_written = 0
        self.clock = TrainingClock(self.dist.distributed, self.dist.is_main)
        self.metric_variant = metric_variant
        self.checkpoints = Path(cfg.CHECKPOINTS_PATH)
        self.best = self._read_best()
        self.memory_format = torch.channels_last if self.options.channels_last else torch.contiguous_format
        amp = resolve_amp(self.options.amp, self.device)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        if self.amp_dtype is torch.float16 and self.device.type != "cuda":
            raise ConfigError("--amp fp16 needs a CUDA device (it relies on a GradScaler); use --amp bf16 on the CPU")

        model = adapt_fast_path(model.to(self.device, memory_format=self.memory_format), self.device,
                                compiled=self.options.compile)
        self.optimizer = self._make_optimizer(model, optimizer, dict(optimizer_params or {}), self.device)
        self.scheduler = self._make_scheduler(lr_scheduler) if lr_scheduler is not None else None
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is torch.float16 else None
        self.position = Position(epoch=self.options.start_epoch)
        self._load_initial_state(model)
        if self.dist.distributed:
            broadcast_buffers(model)  # every rank starts from rank 0's model, its buffers too
            if self.options.sync_bn and self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            # static_graph tolerates parameters that never get a gradient (DucoNet's
            # unused scale_noise scalars); buffers stay per rank as with DataParallel.
            model = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                            broadcast_buffers=False, static_graph=True)
        self.model = model
        # The training forward, compiled with --compile (validation and saving use the eager model); one
        # graph without breaks, except where DDP splits it at its gradient buckets.
        self.train_forward = torch.compile(model, dynamic=False, fullgraph=not self.dist.distributed) \
            if self.options.compile else model
        if self.options.compile:
            logger.info("--compile: the training forward runs under torch.compile (compiled on the first step)")

        if cfg.batch_size % self.dist.world_size:
            raise ConfigError(f"--batch-size {cfg.batch_size} is not divisible by the {self.dist.world_size} processes")
        self.batch_per_rank = cfg.batch_size // self.dist.world_size
        self.train_sampler = SeededSampler(len(trainset), shuffle=True, seed=self.options.seed,
                                           num_replicas=self.dist.world_size, rank=self.dist.rank, drop_last=True)
        # One loader iterator for the whole run, across epochs (EpochBatches): no stall at epoch starts.
        batches = EpochBatches(self.train_sampler, self.batch_per_rank, self.position.epoch, self.position.step)
        self.steps_per_epoch = batches.batches_per_epoch()
        self.train_loader = self._loader(trainset, batches)
        self._train_batches: Iterator[dict[str, Any]] | None = None
        self.val_loader = None
        if valset is not None and len(valset):
            val_sampler = SeededSampler(len(valset), shuffle=False, num_replicas=self.dist.world_size,
                                        rank=self.dist.rank)
            batch = max(1, int(cfg.get("val_batch_size", cfg.batch_size)) // self.dist.world_size)
            self.val_loader = self._loader(valset, BatchSampler(val_sampler, batch, drop_last=False))
        if self.steps_per_epoch == 0:
            raise ConfigError(f"the training set ({len(trainset)} samples) is smaller than one batch of "
                             f"{cfg.batch_size}; lower --batch-size")

        self.writer = SummaryWriter(log_dir=cfg.LOGS_PATH, flush_secs=10) if self.dist.is_main else None
        self._stop_signal: int | None = None
        self.throughput = EpochThroughput()
        self.clock.start()
        self._last_state_save = self.clock()
        self.skipped: list[str] = []
        logger.info("model %s: %d parameters", type(unwrap(model)).__name__,
                    sum(p.numel() for p in unwrap(model).parameters()))

    # --- set-up -----------------------------------------------------------------------------------

    @staticmethod
    def _make_optimizer(model: nn.Module, name: str, params: dict[str, Any],
                        device: torch.device) -> torch.optim.Optimizer:
        """One parameter group, plus one per distinct ``lr_mult`` (the official code made one per tensor).
        On CUDA the fused kernel (one launch for all parameters); on the CPU PyTorch's default."""
        base_lr = params["lr"]
        groups: dict[float, list[nn.Parameter]] = {}
        for parameter in model.parameters():
            if parameter.requires_grad:
                groups.setdefault(getattr(parameter, "lr_mult", 1.0), []).append(parameter)
        param_groups = [{"params": ps, "lr": base_lr * mult} for mult, ps in groups.items()]
        optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
        if name.lower() not in optimizers:
            raise ValueError(f"unknown optimizer '{name}' (choose from {', '.join(optimizers)})")
        if device.type == "cuda":
            params = {"fused": True, **params}
        return optimizers[name.lower()](param_groups, **params)

    def _make_scheduler(self, factory: Callable[..., Any]) -> Any:
        """``factory(optimizer)``; a factory that takes a ``clock`` (``WarmupCosineLR`` in seconds) also gets
        the training clock, so that every rank computes the same learning rate at the same step."""
        if "clock" in inspect.signature(factory).parameters:
            return factory(self.optimizer, clock=self.clock)
        return factory(self.optimizer)

    def _loader(self, dataset: BaseHDataset, batch_sampler: Sampler[list[Any]]) -> DataLoader:
        workers = self.options.workers
        if workers > 0:
            # OpenCV's thread pool does not survive a fork: a worker forked while the pool runs hangs in
            # its first cv2 call. One OpenCV thread in this process stops the pool before workers fork.
            cv2.setNumThreads(1)
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers, collate_fn=collate_samples,
                          pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                          worker_init_fn=_worker_init if workers > 0 else None,
                          generator=torch.Generator())  # keeps the global RNG untouched (exact resume)

    def _load_initial_state(self, model: nn.Module) -> None:
        """``--weights`` (initialise), or resume from the experiment's training state / a weights file."""
        options = self.options
        if options.weights:
            load_weights(model, load_state_dict_file(options.weights), str(options.weights))
            logger.info("initialised weights from %s", options.weights)
        if not options.resume_exp:
            return
        prefix = options.resume_prefix
        state_path = self.checkpoints / STATE_FILE
        if prefix == "latest" and state_path.is_file():
            state = load_training_state(state_path)
            load_weights(model, clean_state_dict(state["model"], str(state_path)), str(state_path))
            self.optimizer.load_state_dict(state["optimizer"])
            self._resume_clock(state)  # before the scheduler, which may read the clock
            if self.scheduler is not None and state["scheduler"] is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state["scaler"] is not None:
                self.scaler.load_state_dict(state["scaler"])
            self._restore_rng(state, state_path)
            self.position = Position(state["epoch"], state["step"], state["global_step"])
            logger.info("resumed exactly from %s: epoch %d, step %d (global step %d)", state_path,
                        self.position.epoch, self.position.step, self.position.global_step)
            return
        pattern = LAST_CHECKPOINT if prefix in ("latest", "last") else f"{prefix}*.pth"
        matches = sorted(p for p in self.checkpoints.glob(pattern) if p.name != STATE_FILE)
        if len(matches) != 1:
            raise FileNotFoundError(f"--resume-prefix {prefix}: expected one checkpoint matching '{pattern}' in "
                                    f"{self.checkpoints}, found {', '.join(p.name for p in matches) or 'none'}")
        load_weights(model, load_state_dict_file(matches[0]), str(matches[0]))
        for _ in range(self.position.epoch):  # the official resume: weights only, scheduler fast-forwarded
            if self.scheduler is not None and self.scheduler_interval == "epoch":
                self.scheduler.step()
        logger.info("resumed weights from %s, starting at epoch %d (optimizer state is fresh)", matches[0],
                    self.position.epoch)

    def _restore_rng(self, state: dict[str, Any], path: Path) -> None:
        """This rank's own RNG states; a state saved by another number of processes cannot resume them
        exactly, which is said, and each rank restarts from its seed."""
        rng = rank_rng(state, self.dist.rank, self.dist.world_size)
        if rng is not None:
            restore_rng(rng, self.device)
            return
        saved = len(state.get("rng_per_rank") or [state["rng"]])
        logger.warning("%s was saved by %d process%s and this run has %d: the random streams restart from the "
                       "seed (--seed %d) on every rank, so this resume is not bitwise exact", path, saved,
                       "es" if saved != 1 else "", self.dist.world_size, self.options.seed)
        seed_everything(self.options.seed, self.dist.rank)

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, num_epochs: int) -> None:
        """Train until ``num_epochs`` (or ``cfg.epochs``), a step / time limit or a stop signal."""
        num_epochs = self.options.epochs or num_epochs
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            while self.position.epoch < num_epochs:
                epoch = self.position.epoch
                self.throughput = EpochThroughput()
                finished = self.training(epoch)
                if not finished:
                    return
                val_every = self.options.val_every
                if self.val_loader is not None and ((epoch + 1) % val_every == 0 or epoch + 1 == num_epochs):
                    started = time.monotonic()
                    self._keep_best(self.validation(epoch), epoch)
                    self.throughput.validation = time.monotonic() - started
                self.position = Position(epoch + 1, 0, self.position.global_step)
                self._save_state()
                logger.info(self.throughput.line(epoch))
        finally:
            self._train_batches = None  # ends the loader's workers
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.writer is not None:
                self.writer.close()

    def _on_signal(self, signum: int, frame: Any) -> None:
        """The first signal stops the run at the end of the step, after a save. Later signals
        (a scheduler's SIGTERM after Ctrl-C, say) let that save finish; only Ctrl-C twice on
        purpose aborts at once (the atomic writes keep the previous files whole)."""
        if self._stop_signal is None:
            self._stop_signal = signum
            logger.warning("received %s: saving a resumable state at the end of this step (Ctrl-C twice: abort "
                           "without saving)", signal.Signals(signum).name)
            return
        if signum == signal.SIGINT == self._stop_signal:
            state = self.checkpoints / STATE_FILE
            kept = f"the last saved state {state} is intact" if state.exists() else "no training state was saved yet"
            raise TrainingAborted(f"aborted by a second Ctrl-C: the steps since the last save are lost; {kept}")
        logger.warning("received %s while stopping: the pending save still finishes", signal.Signals(signum).name)

    def _limit_reached(self) -> str | None:
        max_steps = self.options.max_steps
        if max_steps and self.position.global_step >= max_steps:
            return f"--max-steps {max_steps} reached"
        minutes = self.options.max_train_minutes
        if minutes and self.clock() >= 60 * minutes:
            return f"--max-train-minutes {minutes:g} reached"
        return None

    def training(self, epoch: int) -> bool:
        """One epoch (or its rest, after a resume). False when training stopped early."""
        model = self.model
        model.train()
        if self._train_batches is None:  # the run's first epoch (the loader starts at self.position)
            self._train_batches = iter(self.train_loader)
        steps = self.steps_per_epoch
        losses: dict[str, torch.Tensor] = {}  # sums on the device, read once at the epoch's end
        train_metrics = MetricsAccumulator()
        progress = tqdm(total=steps, initial=self.position.step, desc=f"epoch {epoch}", leave=False,
                        disable=not self.dist.is_main, dynamic_ncols=True)
        waiting = time.monotonic()
        for _ in range(steps - self.position.step):
            batch = next(self._train_batches)
            arrived = time.monotonic()
            self.throughput.batch_arrived(arrived - waiting)
            self.skipped.extend(batch.get("skipped", []))
            empty = "images" not in batch
            stop = self._stop_signal is not None or self._limit_reached() is not None
            # one all-reduce: stop / empty on any rank, and rank 0's clock (engine/clock.py)
            flags = any_rank(torch.tensor([float(stop), float(empty), self.clock.reading()], dtype=torch.float64,
                                          device=self.device))
            self.clock.agree(float(flags[2]))
            if flags[0]:
                progress.close()
                self._stop()
                return False
            if flags[1]:
                waiting = time.monotonic()
                continue  # a batch made only of skipped samples on some rank: every rank skips it
            prepared = self.spec.prepare_batch(batch, self.device, self.memory_format)
            with self._autocast():
                output = self.train_forward(**self.spec.forward_kwargs(prepared, training=True))
            total, parts = self._loss(output, prepared)
            bad = any_rank(torch.tensor([0.0 if torch.isfinite(total) else 1.0], device=self.device))
            if bad[0]:
                progress.close()
                raise NonFiniteLossError(
                    f"non-finite loss ({float(total)}) at epoch {epoch}, step {self.position.step} (global step "
                    f"{self.position.global_step}); training stopped and nothing was written after the last good "
                    f"step: {self.checkpoints / STATE_FILE} and {self.checkpoints / LAST_CHECKPOINT} are intact. "
                    "Lower --lr, try --clip-grad, or check the data of this step.")
            self._backward_and_step(total)
            if self.scheduler is not None and self.scheduler_interval == "step":
                self.scheduler.step()
            with torch.no_grad():
                prediction = self.spec.to_pixels(output["images"])
                target = batch["target_images"].to(self.device, non_blocking=True).float()
                train_metrics.update(image_metrics(prediction, target, prepared["masks"], self.metric_variant,
                                                   with_ssim=False, dtype=torch.float32))
            for name, value in parts.items():
                losses[name] = losses[name] + value if name in losses else value
            stepped = time.monotonic()
            self._after_step(epoch, batch, prediction, parts, total)
            self.throughput.stepped(batch["images"].shape[0] * self.dist.world_size, stepped - arrived,
                                    time.monotonic() - stepped)
            if self.position.step % PROGRESS_EVERY == 1:  # reading the loss waits for a GPU
                progress.set_postfix(loss=f"{float(parts['overall']):.4f}",
                                     img_s=f"{self.throughput.images_per_second():.1f}")
            progress.update(1)
            if self.writer is not None and self.position.global_step % 25 == 0:
                self.writer.add_scalar("TrainStates/images_per_second", self.throughput.images_per_second(),
                                       self.position.global_step)
            waiting = time.monotonic()
        progress.close()
        self._end_of_epoch(epoch, losses, train_metrics)
        return True

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _loss(self, output: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor],
              only_available: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=self.device)
        for name, loss in self.losses.items():
            if only_available and not all(k in output for k in loss.pred_outputs):
                continue
            args = [output[k].float() for k in loss.pred_outputs] + [batch[k] for k in loss.gt_outputs]
            value = loss(*args).mean()
            parts[name] = value.detach()
            total = total + self.loss_weights[name] * value
        parts["overall"] = total.detach()
        return total, parts

    def _backward_and_step(self, total: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        clip = self.options.clip_grad
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            if clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()

    def _after_step(self, epoch: int, batch: Mapping[str, Any], prediction: torch.Tensor,
                    parts: Mapping[str, torch.Tensor], total: torch.Tensor) -> None:
        global_step = self.position.global_step
        if self.writer is not None:
            if global_step % 25 == 0:
                for name, value in parts.items():
                    self.writer.add_scalar(f"TrainLosses/{name}", float(value), global_step)
                self.writer.add_scalar("TrainStates/learning_rate", self.optimizer.param_groups[0]["lr"], global_step)
            if self.image_dump_interval and global_step % self.image_dump_interval == 0:
                strip = harmonization_strip(batch["images"][0], batch["masks"][0], prediction[0],
                                            batch["target_images"][0])
                save_strip(Path(self.cfg.VIS_PATH) / "train" / f"{global_step:06d}_reconstruction.jpg", strip)
                self.writer.add_image("Train/composite_mask_prediction_real", strip, global_step, dataformats="HWC")
        self.position = Position(epoch, self.position.step + 1, global_step + 1)
        self._write_due_snapshots()
        every_steps = self.options.state_every
        every_minutes = self.options.state_every_minutes
        if (every_steps and self.position.step % every_steps == 0) or \
                (every_minutes and self.clock() - self._last_state_save >= 60 * every_minutes):
            self._save_state()

    def _end_of_epoch(self, epoch: int, loss_sums: Mapping[str, torch.Tensor], metrics: MetricsAccumulator) -> None:
        steps = max(1, self.position.step)
        losses = {name: float(value) for name, value in loss_sums.items()}
        metrics.all_reduce()
        summary = metrics.summary()
        average_buffers(self.model)
        logger.info("Epoch %d, train loss: %.6f, train %s", epoch, losses.get("overall", math.nan) / steps,
                    ", ".join(f"{k} {summary[k]:.2f}" for k in ("MSE", "fMSE", "PSNR") if k in summary))
        if self.writer is not None:
            for name, value in losses.items():
                self.writer.add_scalar(f"TrainLosses/epoch_{name}", value / steps, epoch)
            for name in ("MSE", "fMSE", "PSNR"):
                if name in summary:
                    self.writer.add_scalar(f"TrainMetrics/epoch_{name}", summary[name], epoch)
        self._report_skipped(epoch)
        if self.dist.is_main:
            state = self._weights()
            self._write(state, self.checkpoints / LAST_CHECKPOINT)
            if self.checkpoint_interval and epoch % self.checkpoint_interval == 0:
                self._write(state, self.checkpoints / f"{epoch:03d}.pth")
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            self.scheduler.step()

    def _report_skipped(self, epoch: int) -> None:
        if not self.skipped:
            return
        logger.warning("epoch %d: skipped %d bad samples (--skip-bad-samples):\n  %s", epoch, len(self.skipped),
                       "\n  ".join(self.skipped))
        if self.dist.is_main:
            with open(Path(self.cfg.LOGS_PATH) / "skipped_samples.txt", "a") as handle:
                handle.writelines(f"epoch {epoch}\t{message}\n" for message in self.skipped)
        self.skipped = []

    # --- validation -------------------------------------------------------------------------------

    @torch.no_grad()
    def validation(self, epoch: int) -> dict[str, float]:
        """Loss and the evaluation metrics on the validation set, reduced over ranks."""
        model = unwrap(self.model)
        average_buffers(model)  # every rank validates the weights that are saved
        model.eval()
        metrics = MetricsAccumulator()
        loss_sum, batches = 0.0, 0
        for batch in self.val_loader:
            self.skipped.extend(batch.get("skipped", []))
            if "images" not in batch:
                continue
            prepared = self.spec.prepare_batch(batch, self.device, self.memory_format)
            start = time.perf_counter()
            with self._autocast():
                output = model(**self.spec.forward_kwargs(prepared))
            prediction = self.spec.to_pixels(output["images"])
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # the kernels' time, not their launch
            seconds = time.perf_counter() - start
            total, _ = self._loss(output, prepared, only_available=True)
            loss_sum, batches = loss_sum + float(total), batches + 1
            metrics.update(image_metrics(prediction, batch["target_images"].to(self.device).float(),
                                         prepared["masks"], self.metric_variant), seconds)
        model.train()
        metrics.all_reduce()
        summary = metrics.summary()
        logger.info("Epoch %d, validation loss: %.6f\n%s", epoch, loss_sum / max(batches, 1),
                    format_table({"validation": summary}, variant=self.metric_variant))
        if self.writer is not None:
            self.writer.add_scalar("ValLosses/overall", loss_sum / max(batches, 1), epoch)
            for name, value in summary.items():
                self.writer.add_scalar(f"ValMetrics/epoch_{name}", value, epoch)
        self._report_skipped(epoch)
        return summary

    # --- checkpoints and stopping ------------------------------------------------------------------

    def _weights(self) -> dict[str, torch.Tensor]:
        """The model's state dict on the CPU: a file written on a GPU loads on any machine, also with
        the official loaders (``torch.load`` without ``map_location``)."""
        return {key: value.detach().cpu() for key, value in unwrap(self.model).state_dict().items()}

    def _write(self, obj: Any, path: Path) -> None:
        try:
            save_atomic(obj, path)
        except OSError as exc:
            raise OSError(f"could not write {path} ({exc.strerror or exc}); the previous file, if any, is intact "
                          "(checkpoints are written to a temporary file and renamed)") from exc

    def _read_best(self) -> dict[str, float]:
        """The record of ``best_checkpoint.pth`` (a resumed run goes on comparing with it), else none."""
        record = self.checkpoints / BEST_CHECKPOINT.replace(".pth", ".json")
        return json.loads(record.read_text()) if record.is_file() else {}

    def _keep_best(self, summary: Mapping[str, float], epoch: int) -> None:
        """Keep the weights of the lowest validation fMSE as ``best_checkpoint.pth`` (and its record)."""
        fmse = summary.get("fMSE")
        if fmse is None or not math.isfinite(fmse) or fmse >= self.best.get("fMSE", math.inf):
            return
        self.best = {"epoch": epoch, "fMSE": fmse}
        if self.dist.is_main:
            self._write(self._weights(), self.checkpoints / BEST_CHECKPOINT)
            atomic_write_text(self.checkpoints / BEST_CHECKPOINT.replace(".pth", ".json"), json.dumps(self.best))
        logger.info("Epoch %d: best validation fMSE so far (%.2f), weights kept as %s", epoch, fmse, BEST_CHECKPOINT)

    def _resume_clock(self, state: dict[str, Any]) -> None:
        """Count the training time of the interrupted run: ``--max-train-minutes`` and the time snapshots
        go on from where it stopped."""
        seconds = trained_seconds(state)
        self.clock.resume(seconds)
        if self.snapshot_minutes:
            self._snapshots_written = int(seconds // (60 * self.snapshot_minutes))

    def _write_due_snapshots(self) -> None:
        """Weights as ``tMMMmin.pth`` each time the training time passes a multiple of ``snapshot_minutes``.

        The name is the multiple reached (``t005min.pth`` after 5 minutes); a step
        that spans several multiples writes only the last one.
        """
        if not self.snapshot_minutes:
            return
        due = int(self.clock() // (60 * self.snapshot_minutes))
        if due > self._snapshots_written:
            self._snapshots_written = due
            average_buffers(self.model)
            if self.dist.is_main:
                minutes = due * self.snapshot_minutes
                self._write(self._weights(), self.checkpoints / f"t{minutes:03g}min.pth")

    def _save_state(self) -> None:
        """Write the training state (every rank takes part: it holds every rank's RNG states)."""
        average_buffers(self.model)
        rng_per_rank = gather_objects(capture_rng(self.device))
        if self.dist.is_main:
            try:
                save_training_state(self.checkpoints / STATE_FILE, model_state=self._weights(),
                                    optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
                                    position=self.position, seed=self.options.seed, rng_per_rank=rng_per_rank,
                                    train_seconds=self.clock())
            except OSError as exc:
                raise OSError(f"could not write {self.checkpoints / STATE_FILE} ({exc.strerror or exc}); the "
                              "previous training state is intact") from exc
        self._last_state_save = self.clock()

    def _stop(self) -> None:
        """Save weights and a resumable state, then end the run (signal: raise)."""
        self._save_state()
        if self.dist.is_main:
            self._write(self._weights(), self.checkpoints / LAST_CHECKPOINT)
        self._report_skipped(self.position.epoch)
        logger.info("%s (stopped at step %d)", self.throughput.line(self.position.epoch), self.position.step)
        resume = f"resume with: --resume-exp {Path(self.cfg.EXP_PATH).name}"
        if self._stop_signal is not None:
            name = signal.Signals(self._stop_signal).name
            raise TrainingInterrupted(self._stop_signal, f"stopped by {name} at epoch {self.position.epoch}, step "
                                                         f"{self.position.step}; state saved; {resume}")
        logger.info("%s at epoch %d, step %d; state saved; %s", self._limit_reached(), self.position.epoch,
                    self.position.step, resume)

