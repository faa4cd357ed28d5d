"""A small resumable training loop: Adam, progress bar, periodic checkpoints, loss history."""
from __future__ import annotations

import json
import logging
import random
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from codealign_ros.train.distributed import Accel, barrier, current
from codealign_ros.train.tb import RunLog, run_dir

if TYPE_CHECKING:
    from codealign_ros.train.dataset import StepLoader

LOG = logging.getLogger("codealign.train")
StepFn = Callable[[int], tuple[Tensor, dict[str, float]]]
BatchStepFn = Callable[[int, Any], tuple[Tensor, dict[str, float]]]


@dataclass
class LoopConfig:
    """Optimisation settings of one training run."""

    steps: int
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    checkpoint_every: int = 100
    grad_clip: float = 10.0
    progress: bool = True
    logdir: str = ""  # TensorBoard root ("" = none)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _save(path: Path, modules: dict[str, nn.Module], optim: torch.optim.Optimizer,
          sched: torch.optim.lr_scheduler.LRScheduler, step: int, history: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "modules": {k: m.state_dict() for k, m in modules.items()},
                "optim": optim.state_dict(), "sched": sched.state_dict(), "history": history,
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                        "python": random.getstate()}}, tmp)
    tmp.replace(path)


def _resume(path: Path, modules: dict[str, nn.Module], optim: torch.optim.Optimizer,
            sched: torch.optim.lr_scheduler.LRScheduler) -> tuple[int, list[dict]]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    for name, module in modules.items():
        module.load_state_dict(state["modules"][name])
    optim.load_state_dict(state["optim"])
    with warnings.catch_warnings():  # replay the schedule (the run may have been extended)
        warnings.simplefilter("ignore")
        for _ in range(min(int(state["step"]), sched.total_steps - 1)):
            sched.step()
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    return int(state["step"]), list(state["history"])


class _StepModule(nn.Module):
    """The trained modules + the step function as one module, so DistributedDataParallel can
    wrap every stage alike (its forward is the step; gradients are averaged over ranks)."""

    def __init__(self, modules: dict[str, nn.Module], fn: Callable[..., Any]) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(modules)
        self.fn = fn

    def forward(self, step: int, batch: Any = None) -> tuple[Tensor, dict[str, float]]:
        return self.fn(step) if batch is None else self.fn(step, batch)


def fit(name: str, modules: dict[str, nn.Module], params: list[nn.Parameter] | list[dict],
        step_fn: StepFn | BatchStepFn, cfg: LoopConfig, checkpoint: Path | None = None,
        loader: "StepLoader | None" = None, accel: Accel | None = None) -> list[dict]:
    """Run `cfg.steps` optimiser steps over `params` (parameters, or param groups
    {"params": [...], "lr_scale": k} for a k-times higher lr) of `step_fn(step, batch)` on the
    batches of `loader` (or `step_fn(step)` without one), returning (loss, float parts).

    `accel` (default: CPU, or the torchrun process group) sets device, autocast and data
    parallelism: under torchrun the step runs inside DistributedDataParallel and only rank 0
    writes the checkpoint and the TensorBoard run `cfg.logdir/<checkpoint name>` (losses, lr,
    step and data-wait times). `modules` are saved in the checkpoint and restored when it
    exists, so an interrupted run resumes where it stopped, with the same batches.
    """
    if not params:
        raise ValueError(f"{name}: nothing to train")
    accel = accel or current()
    groups = params if isinstance(params[0], dict) else [{"params": params}]
    optim = torch.optim.Adam([{"params": g["params"]} for g in groups], lr=cfg.lr,
                             weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        optim, max_lr=[cfg.lr * g.get("lr_scale", 1.0) for g in groups],
        total_steps=max(cfg.steps, 1), pct_start=min(0.9, max(0.1, 2.5 / max(cfg.steps, 1))))
    scaler = torch.amp.GradScaler("cuda", enabled=accel.amp_dtype == torch.float16)
    flat = [p for g in groups for p in g["params"]]
    start, history = 0, []
    if checkpoint is not None and checkpoint.exists():
        start, history = _resume(checkpoint, modules, optim, sched)
        LOG.info("%s: resumed at step %d from %s", name, start, checkpoint)
    else:
        seed_everything(cfg.seed)
    runner: nn.Module = _StepModule(modules, step_fn)
    if accel.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # channels-last conv weight grads vs contiguous buckets: a copy, not an error
        warnings.filterwarnings("ignore", "Grad strides do not match bucket view strides")
        runner = DistributedDataParallel(runner, device_ids=[accel.device.index]
                                         if accel.cuda else None, find_unused_parameters=True)
    log = RunLog(run_dir(Path(cfg.logdir), checkpoint.stem if checkpoint else name)
                 if cfg.logdir and accel.main else None)
    batches = loader.batches(start) if loader is not None else None
    bar = tqdm(total=cfg.steps, initial=start, desc=name, dynamic_ncols=True, leave=True,
               disable=not (cfg.progress and accel.main))
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        batch = None if batches is None else next(batches).to(accel.device, non_blocking=True)
        t1 = time.perf_counter()
        with torch.autocast(accel.device.type, dtype=accel.amp_dtype or torch.float32,
                            enabled=accel.amp_dtype is not None):
            loss, parts = runner(step) if batch is None else runner(step, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: non-finite loss at step {step}: {parts}")
        optim.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optim)
        torch.nn.utils.clip_grad_norm_(flat, cfg.grad_clip)
        scaler.step(optim)
        scaler.update()
        lr = float(sched.get_last_lr()[0])
        if step < sched.total_steps - 1:
            sched.step()
        if accel.cuda:
            torch.cuda.synchronize(accel.device)
        t2 = time.perf_counter()
        history.append({"step": step, "loss": float(loss.detach()), **parts,
                        "seconds": t2 - t0, "data_seconds": t1 - t0})
        if accel.cuda:
            history[-1]["gpu_peak_mb"] = torch.cuda.max_memory_allocated(accel.device) / 2**20
        log.scalars(step, {"loss/total": history[-1]["loss"], **{f"loss/{k}": v for k, v in
                                                                 parts.items()},
                           "lr": lr, "time/step_s": t2 - t0, "time/data_s": t1 - t0})
        bar.update(1)
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
        if checkpoint is not None and (step + 1) % cfg.checkpoint_every == 0 and accel.main:
            _save(checkpoint, modules, optim, sched, step + 1, history)
    bar.close()
    log.close()
    if checkpoint is not None and accel.main:
        _save(checkpoint, modules, optim, sched, cfg.steps, history)
    barrier()
    return history


def write_history(path: Path, history: list[dict], config: LoopConfig) -> None:
    """History as JSON (config + per-step records) for model cards and plots."""
    path.write_text(json.dumps({"config": asdict(config), "history": history}))


def smoothed(history: list[dict], key: str = "loss", window: int = 20) -> tuple[float, float]:
    """Mean of `key` over the first and the last `window` steps."""
    values = [h[key] for h in history if key in h]
    if not values:
        return float("nan"), float("nan")
    w = max(1, min(window, len(values) // 2 or 1))
    return float(np.mean(values[:w])), float(np.mean(values[-w:]))
