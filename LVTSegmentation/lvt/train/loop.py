"""The training loop: masked partial-label losses, checkpoints, validation, resume and DDP.

``run_training(config)`` is the one function behind ``lvt train``, ``LVTTraining/LVTTrainingScripts/train.py`` and
the Slicer LVTTraining module. Under ``torchrun`` every rank draws the same global batch and keeps
its share, so N processes with the same global batch follow one process's trajectory; only rank 0
writes files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from lvt.atomic import atomic_folder, write_text_atomically
from lvt.errors import CancelledError, InputError
from lvt.progress import ProgressCallback, check_cancel, report
from lvt.segment.model_file import ModelManifest, load_model, save_model, save_tensors
from lvt.segment.network import UNet, build_network
from lvt.segment.network_config import TARGET_OF_LOSS
from lvt.segment.predict import Predictor
from lvt.train.augment import apply_augment, context_size, draw_augment_params
from lvt.train.config import TrainingConfig
from lvt.train.consistency import MeanTeacher
from lvt.train.data.cache import CachedCase
from lvt.train.data.prepare import dataset_weights, prepare_run_cases
from lvt.train.distributed import DistributedRun, init_distributed, prepare_for_ddp
from lvt.train.losses import lvt_loss
from lvt.train.sampling import PatchSampler
from lvt.train.validation import VALIDATION_WINDOWS, score_cases

logger = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """Where the run left its models and how it went."""

    final_model: Path
    best_model: Path | None
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    skipped_cases: list[str] = field(default_factory=list)


def build_optimizer(
    network: torch.nn.Module, config: TrainingConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with cosine decay or SGD with polynomial decay, both after a linear warm-up."""
    opt = config.optimizer
    if opt.name == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            network.parameters(), lr=opt.learning_rate, weight_decay=opt.weight_decay)
    else:
        optimizer = torch.optim.SGD(network.parameters(), lr=opt.learning_rate, weight_decay=opt.weight_decay,
                                    momentum=opt.momentum, nesterov=True)
    total, warmup, schedule = config.steps, opt.warmup_steps, opt.schedule

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return (1.0 - progress) ** 0.9

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def model_manifest(config: TrainingConfig, training: dict | None = None, metrics: dict | None = None) -> ModelManifest:
    """The manifest of a model this config trains: inference settings, target kind and head, provenance."""
    return ModelManifest(name=config.model_name, version=config.model_version, spacing_mm=config.spacing_mm,
                         patch_size_zyx=config.patch_size_zyx, window=config.window, network=config.network,
                         target=TARGET_OF_LOSS[config.loss], training=training or {}, metrics=metrics or {})


def _start_from(network: torch.nn.Module, config: TrainingConfig) -> None:
    """Load ``config.init_weights`` (a checked model file) into ``network``; its architecture must match."""
    start, manifest = load_model(config.init_weights)
    if manifest.network != config.network:
        raise InputError(config.init_weights, f"its network {manifest.network} is not the config's {config.network}")
    network.load_state_dict(start.state_dict())
    logger.info("starting from %s %s (%s)", manifest.name, manifest.version, config.init_weights)


class Trainer:
    """State of one run: network, optimiser, schedule, sampler and generators."""

    def __init__(self, config: TrainingConfig, cases: list[CachedCase], device: torch.device,
                 ddp: DistributedRun, cross_validation: dict | None = None,
                 unlabelled: list[CachedCase] | None = None) -> None:
        self.config = config
        self.cross_validation = cross_validation
        self.device = device
        self.ddp = ddp
        torch.manual_seed(config.seed)
        self.network, self.model = prepare_for_ddp(build_network(config.network).to(device), ddp, device)
        self.network.deep_supervision = True
        if config.init_weights is not None:
            _start_from(self.network, config)
        self.optimizer, self.scheduler = build_optimizer(self.network, config)
        self.context = context_size(config.patch_size_zyx, config.augment)
        self.sampler = PatchSampler(cases, self.context, config.foreground_probability, config.seed,
                                    dataset_weights(config.datasets))
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.mean_teacher = None if config.consistency is None else \
            MeanTeacher(config, self.network, unlabelled or [], self.context, device, ddp)
        self.step = 0
        self.history: list[dict] = []
        self.best_score = -1.0
        if config.batch_size % ddp.world_size:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the {ddp.world_size} processes")

    def train_step(self) -> dict[str, float]:
        """One optimiser step; returns the supervised loss (and the consistency term's value and weight)."""
        config = self.config
        batch = self.sampler.sample(config.batch_size)
        params = draw_augment_params(config.batch_size, config.augment, config.window, self.generator)
        local = config.batch_size // self.ddp.world_size
        share = slice(self.ddp.rank * local, (self.ddp.rank + 1) * local)
        hu = torch.from_numpy(batch.hu[share]).to(self.device, non_blocking=True)
        bits = torch.from_numpy(batch.bits[share]).to(self.device, non_blocking=True)
        inputs, masks = apply_augment(hu, bits, params.select(share), config.patch_size_zyx)
        weights = torch.from_numpy(batch.class_weights[share]).to(self.device)
        views = None if self.mean_teacher is None else self.mean_teacher.views(self._autocast())
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():  # one forward for both batches: DDP allows one per backward
            outputs = self.model(inputs if views is None else torch.cat((inputs, views.student_input)))
        loss = lvt_loss([level[:len(inputs)] for level in outputs], masks, weights, config.loss)
        record = {"loss": float(loss.detach())}
        if self.mean_teacher is not None and views is not None:
            term, values = self.mean_teacher.loss(outputs[0][len(inputs):], views, self.step)
            loss, record = loss + term, {**record, **values}
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), config.optimizer.gradient_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        if self.mean_teacher is not None:
            self.mean_teacher.update(self.network)
        self.step += 1
        return record

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.use_amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def manifest(self, metrics: dict | None = None) -> ModelManifest:
        training = {"config": self.config.to_dict(), "steps": self.step, "device": str(self.device),
                    "world_size": self.ddp.world_size, "torch": torch.__version__}
        if self.cross_validation is not None:
            training["cross_validation"] = self.cross_validation
        return model_manifest(self.config, training, metrics)

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Optimiser tensors and JSON state: everything a resume needs besides the weights."""
        opt_state = self.optimizer.state_dict()
        tensors = {f"optimizer.{index}.{name}": value for index, state in opt_state["state"].items()
                   for name, value in state.items() if isinstance(value, torch.Tensor)}
        tensors["generator"] = self.generator.get_state()
        meta = {
            "step": self.step,
            "param_groups": opt_state["param_groups"],
            "scalar_state": {str(i): {k: v for k, v in s.items() if not isinstance(v, torch.Tensor)}
                             for i, s in opt_state["state"].items()},
            "scheduler": {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"},
            "sampler": self.sampler.state_dict(),
            "history": self.history,
            "best_score": self.best_score,
        }
        if self.mean_teacher is not None:
            teacher_tensors, teacher_meta = self.mean_teacher.state()
            tensors, meta = {**tensors, **teacher_tensors}, {**meta, **teacher_meta}
        return tensors, meta

    def load_state(self, folder: Path) -> None:
        weights = load_file(str(folder / "model.safetensors"), device=str(self.device))
        self.network.load_state_dict(weights)
        tensors = load_file(str(folder / "state.safetensors"))
        meta = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        state: dict = {int(i): dict(s) for i, s in meta["scalar_state"].items()}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value.to(self.device)
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.scheduler.load_state_dict({**meta["scheduler"], "lr_lambdas": [None]})
        self.sampler.load_state_dict(meta["sampler"])
        self.generator.set_state(tensors["generator"])
        self.step, self.history, self.best_score = meta["step"], meta["history"], meta["best_score"]
        if self.mean_teacher is not None:
            if "consistency_sampler" not in meta:
                raise InputError(folder, "this resume point has no teacher (its run had no consistency section)")
            self.mean_teacher.load_state(tensors, meta)


def save_resume_point(trainer: Trainer, folder: Path) -> None:
    """Write ``folder`` (model + optimiser + RNG state) so a killed run resumes exactly; swapped in atomically."""
    with atomic_folder(folder) as staging:
        save_model(trainer.network, trainer.manifest(), staging / "model.json")
        tensors, meta = trainer.state_tensors()
        save_tensors(staging / "state.safetensors", tensors)
        (staging / "state.json").write_text(json.dumps(meta), encoding="utf-8")


def find_resume_point(output_dir: Path) -> Path | None:
    """The last complete resume folder (a crash mid-swap leaves the previous one in a retired sibling)."""
    checkpoints = output_dir / "checkpoints"
    for folder in (checkpoints / "last", *sorted(checkpoints.glob(".last.old-*/last"))):
        if (folder / "state.json").is_file():
            return folder
    return None


def validate(network: UNet, config: TrainingConfig, cases: list[CachedCase], device: torch.device) -> dict:
    """:func:`lvt.train.validation.score_cases` of the network being trained (its config: patch, window, target)."""
    network.deep_supervision = False
    try:
        return score_cases(Predictor(network, model_manifest(config), device, VALIDATION_WINDOWS), cases,
                           config.spacing_mm)
    finally:
        network.deep_supervision = True
        network.train()


def _log_line(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def run_training(config: TrainingConfig, *, device: str = "auto", resume: bool = False, skip_bad_cases: bool = False,
                 progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> TrainingResult:
    """Train a model as the config says; write best/final models in the LVT model format.

    Raises:
        CancelledError: after saving a resume point, when ``cancel`` was set.
    """
    ddp, torch_device = init_distributed(device)
    out = config.run_dir
    cases = prepare_run_cases(config, skip_bad_cases=skip_bad_cases, progress=progress, cancel=cancel,
                              write=ddp.is_main, ddp=ddp)
    val_cases, skipped = cases.validation, cases.skipped
    trainer = Trainer(config, cases.training, torch_device, ddp, cases.cross_validation, cases.unlabelled)
    resume_point = find_resume_point(out) if resume else None
    if resume_point:
        trainer.load_state(resume_point)
        logger.info("resumed from %s at step %d", resume_point, trainer.step)
    if ddp.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomically(out / "config.json", json.dumps(config.to_dict(), indent=2))
        if cases.cross_validation is not None:
            write_text_atomically(out / "folds.json", json.dumps(cases.cross_validation, indent=2))
    start = time.perf_counter()
    first_step = trainer.step
    losses: list[float] = []
    try:
        while trainer.step < config.steps:
            check_cancel(cancel)
            step_record = trainer.train_step()
            losses.append(step_record["loss"])
            _after_step(trainer, losses, step_record, val_cases, start, first_step, progress)
    except CancelledError:
        if ddp.is_main:
            save_resume_point(trainer, out / "checkpoints" / "last")
        raise
    seconds = time.perf_counter() - start
    return _finish(trainer, val_cases, seconds, skipped)


def _after_step(trainer: Trainer, losses: list[float], step_record: dict[str, float], val_cases: list[CachedCase],
                start: float, first_step: int, progress: ProgressCallback | None) -> None:
    config, step = trainer.config, trainer.step
    elapsed = time.perf_counter() - start
    rate = (step - first_step) / max(elapsed, 1e-9)
    recent = float(np.mean(losses[-20:]))
    eta = (config.steps - step) / max(rate, 1e-9)
    report(progress, "train", step, config.steps,
           f"loss {recent:.4f} | {rate:.2f} it/s | ETA {_format_seconds(eta)}")
    record: dict = {"step": step, **step_record, "lr": trainer.scheduler.get_last_lr()[0], "seconds": elapsed}
    if val_cases and (step % config.validate_every == 0 or step == config.steps):
        report(progress, "validate", 0, len(val_cases), f"validating at step {step}")
        record["validation"] = validate(trainer.network, config, val_cases, trainer.device)
        if trainer.ddp.is_main and record["validation"]["mean_dice"] > trainer.best_score:
            trainer.best_score = record["validation"]["mean_dice"]
            save_model(trainer.network, trainer.manifest(record["validation"]), config.run_dir / "best.json")
    trainer.history.append(record)
    if trainer.ddp.is_main:
        _log_line(config.run_dir / "metrics.jsonl", record)
        if step % config.checkpoint_every == 0 or step == config.steps:
            save_resume_point(trainer, config.run_dir / "checkpoints" / "last")


def _finish(trainer: Trainer, val_cases: list[CachedCase], seconds: float, skipped: list[str]) -> TrainingResult:
    out = trainer.config.run_dir
    last_validation = next((h["validation"] for h in reversed(trainer.history) if "validation" in h), {})
    best = out / "best.json" if (out / "best.json").is_file() else None
    if trainer.ddp.is_main:
        save_model(trainer.network, trainer.manifest(last_validation), out / "final.json")
        from lvt.train.plot import plot_history  # matplotlib only where a plot is written

        plot_history(trainer.history, out / "curves.png")
    trainer.ddp.barrier()
    return TrainingResult(out / "final.json", best, trainer.step, seconds, trainer.history, skipped)


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
