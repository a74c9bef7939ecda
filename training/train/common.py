"""The trainer every stage shares, on Hugging Face accelerate.

One loop runs on one CPU, one GPU, or under ``accelerate launch`` /
``torchrun`` across processes and nodes (DDP from accelerate; nothing
distributed is written here). It gives each stage:

* a run folder: ``config.yaml`` (the resolved stage config), ``run.json``
  (data, world size, versions), ``metrics.csv`` and ``val_metrics.csv`` (and ``tensorboard/``
  when TensorBoard is installed), ``checkpoints/step-XXXXXXX/`` (accelerate state:
  weights, optimizers, schedulers, RNG, plus ``trainer_state.json``),
  ``samples/`` for image stages, and the final model folders under ``model/``
  (the one model format) with ``eval.json``;
* mixed precision, gradient accumulation, gradient clipping, warm-up + cosine
  learning rate;
* reproducibility that survives a kill: the batch of micro-step ``m`` is a pure
  function of ``(seed, m)`` (a seeded permutation per epoch, sliced by process
  rank), and the RNGs are re-seeded from ``(seed, m, rank)`` before every
  micro-step, so a run resumed from its last checkpoint (weights + optimizer +
  scheduler + step) ends with the same weights as an uninterrupted one;
* a tqdm progress bar with the loss and samples/s (main process only).

A stage is an object with the :class:`Stage` methods; ``run_stage`` drives it.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from neuroimagen.stream.config import dump_yaml

from ..config import TrainerConfig

__all__ = [
    "RunContext",
    "Stage",
    "StepContext",
    "batch_indices",
    "latest_checkpoint",
    "make_lr_lambda",
    "run_stage",
]

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
METRICS_FILE = "metrics.csv"
VAL_METRICS_FILE = "val_metrics.csv"


@dataclass
class StepContext:
    """What a stage's ``train_step`` gets besides the batch."""

    accelerator: Any  #: accelerate.Accelerator
    step: int  #: optimizer step being accumulated (0-based)
    micro_step: int
    generator: torch.Generator  #: CPU generator seeded from (seed, micro_step, rank)
    grad_clip: float | None

    def backward_and_step(self, loss: torch.Tensor, optimizer, models, scheduler=None) -> None:
        """Backward (scaled for accumulation and mixed precision), clip, step, zero the gradients.

        The prepared optimizer and scheduler only step when accelerate syncs the gradients
        (the last micro-step of an accumulation).
        """
        acc = self.accelerator
        acc.backward(loss)
        if acc.sync_gradients and self.grad_clip:
            params = [p for m in models for p in m.parameters() if p.requires_grad]
            acc.clip_grad_norm_(params, self.grad_clip)
        optimizer.step()
        if scheduler is not None and acc.sync_gradients:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)


@dataclass
class RunContext:
    """What a stage's ``setup`` gets: where the run lives and how it is distributed."""

    run_dir: Path
    accelerator: Any
    trainer: TrainerConfig


class Stage(Protocol):
    """A training stage: data, models, one train step, evaluation, export."""

    name: str
    config: Any  #: the stage's frozen config (saved as config.yaml)

    def setup(self, ctx: RunContext) -> None:
        """Load data, build models and optimizers; prepare them with ``ctx.accelerator``."""

    def n_train(self) -> int:
        """Number of training items (the batch indices index these)."""

    def batch(self, indices: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """The training batch of these item indices, on ``device``."""

    def checkpointed(self) -> list[Any]:
        """Prepared models, optimizers and schedulers, in a fixed order (all of them)."""

    def accumulate_models(self) -> list[torch.nn.Module]:
        """The prepared models whose gradients accumulate (for ``accelerator.accumulate``)."""

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, float]:
        """One micro-step: losses, ``ctx.backward_and_step``; returns scalar metrics."""

    def evaluate(self) -> dict[str, float]:
        """Validation metrics (main process; models in eval mode, no grad)."""

    def save_samples(self, folder: Path, step: int) -> None:
        """Sample images for image stages (main process); others do nothing."""

    def export(self, folder: Path) -> dict[str, str]:
        """Save the final models (unwrapped) as model folders under ``folder``; name -> path."""


def make_lr_lambda(cfg: TrainerConfig):
    """Linear warm-up to 1, then cosine decay to ``lr_min_ratio`` at ``max_steps``."""

    def fn(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def batch_indices(n_items: int, batch_size: int, micro_step: int, seed: int,
                  rank: int = 0, world_size: int = 1) -> np.ndarray:
    """The item indices this process trains on at ``micro_step``.

    Epoch ``e`` visits a seeded permutation of the items in global batches of
    ``batch_size`` (the last partial batch is dropped); process ``rank`` takes
    every ``world_size``-th index of the global batch.
    """
    if batch_size > n_items:
        raise ValueError(f"batch_size={batch_size} is larger than the {n_items} training items")
    if batch_size % world_size:
        raise ValueError(f"batch_size={batch_size} does not split over {world_size} processes")
    per_epoch = n_items // batch_size
    epoch, k = divmod(micro_step, per_epoch)
    perm = np.random.default_rng([seed, epoch, 7919]).permutation(n_items)
    return perm[k * batch_size : (k + 1) * batch_size][rank::world_size]


def _seed_everything(seed: int, micro_step: int, rank: int) -> torch.Generator:
    import random

    s = int(np.random.SeedSequence([seed, micro_step, rank]).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)  # noqa: NPY002 - third-party code may draw from the legacy global RNG
    torch.manual_seed(s)
    return torch.Generator().manual_seed(s)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (one with its trainer_state.json), or None."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    done = sorted(p for p in folder.glob("step-*") if (p / STATE_FILE).is_file())
    return done[-1] if done else None


class _Metrics:
    """metrics.csv (one row per logged step) and TensorBoard when it is installed."""

    def __init__(self, run_dir: Path, resume_step: int, name: str = METRICS_FILE, tensorboard: bool = True) -> None:
        self.path = run_dir / name
        self.fields: list[str] | None = None
        if self.path.is_file():
            # a resumed run drops the rows logged after its checkpoint (they are redone)
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            self.fields = list(rows[0]) if rows else None
            keep = [r for r in rows if int(r["step"]) <= resume_step]
            with open(self.path, "w", newline="") as f:
                if self.fields:
                    w = csv.DictWriter(f, self.fields)
                    w.writeheader()
                    w.writerows(keep)
        self.tb = None
        if not tensorboard:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1)
        except ImportError:
            logger.debug("TensorBoard not installed: metrics go to %s only", self.path)

    def log(self, row: dict[str, Any]) -> None:
        if self.fields is None:
            self.fields = list(row)
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, self.fields).writeheader()
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, float | int):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _versions() -> dict[str, str]:
    import diffusers

    out = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__}
    try:
        import accelerate

        out["accelerate"] = accelerate.__version__
    except ImportError:  # pragma: no cover - accelerate is required to get here
        pass
    return out


def _save_checkpoint(acc, run_dir: Path, step: int, keep: int) -> Path:
    folder = run_dir / CHECKPOINTS
    final = folder / f"step-{step:07d}"
    tmp = folder / f"tmp-step-{step:07d}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    acc.wait_for_everyone()
    if acc.is_main_process:
        # trainer_state.json last, then one rename: a checkpoint is complete or absent
        (tmp / STATE_FILE).write_text(json.dumps({"step": step}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        done = sorted(p for p in folder.glob("step-*") if (p / STATE_FILE).is_file())
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)


def run_stage(
    stage: Stage,
    run_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    data_info: dict[str, Any] | None = None,
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """Train ``stage`` in ``run_dir`` (resuming from its last checkpoint), evaluate, export.

    Parameters
    ----------
    stage : Stage
    run_dir : path
        Created if missing. An existing run folder resumes (``resume=True``) or is refused.
    progress : bool
        Show a progress bar (main process only).
    data_info : dict
        Written into run.json (e.g. the twin folder and its sha256s).
    stop_after_steps : int | None
        Stop (after checkpointing) once this many optimizer steps are done in total;
        the run can be resumed. For tests and time-boxed runs.

    Returns
    -------
    dict
        ``step``, ``resumed_from`` (step or None), ``models`` (name -> folder),
        ``eval`` (metrics), ``train_s`` (wall time of this call's training).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    cfg: TrainerConfig = stage.config.trainer
    run_dir = Path(run_dir)
    acc = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum_steps,
        # batch_size is global and the schedule counts optimizer steps: step it once per sync
        step_scheduler_with_optimizer=False,
        cpu=os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"),
    )
    # 1. run folder, resolved config; refuse to train over another config's run
    ckpt = latest_checkpoint(run_dir) if resume else None
    config_yaml = dump_yaml(stage.config.model_dump(mode="json"))
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        old = run_dir / "config.yaml"
        if ckpt is not None and old.is_file() and old.read_text() != config_yaml:
            raise ValueError(
                f"{run_dir}: resuming a run whose config.yaml differs from this config; "
                "use a new --out folder (or --no-resume to start over)"
            )
        if not resume and (run_dir / CHECKPOINTS).exists():
            shutil.rmtree(run_dir / CHECKPOINTS)
        old.write_text(config_yaml)
        info = {
            "stage": stage.name,
            "world_size": acc.num_processes,
            "device": str(acc.device),
            "mixed_precision": cfg.mixed_precision,
            "versions": _versions(),
            "data": data_info or {},
        }
        (run_dir / "run.json").write_text(json.dumps(info, indent=2))
    acc.wait_for_everyone()

    # 2. models, optimizers, data (seeded: every process builds the same initial weights)
    set_seed(cfg.seed)
    stage.setup(RunContext(run_dir=run_dir, accelerator=acc, trainer=cfg))
    step = 0
    resumed_from = None
    if ckpt is not None:
        acc.load_state(str(ckpt))
        step = resumed_from = int(json.loads((ckpt / STATE_FILE).read_text())["step"])
        logger.info("resumed %s from %s (step %d)", stage.name, ckpt, step)
    metrics = _Metrics(run_dir, step) if acc.is_main_process else None
    val_metrics = _Metrics(run_dir, step, VAL_METRICS_FILE, tensorboard=False) if acc.is_main_process else None
    end_step = cfg.max_steps if stop_after_steps is None else min(cfg.max_steps, stop_after_steps)

    # 3. the loop
    bar = _progress(cfg.max_steps, step, progress and acc.is_main_process)
    t0 = time.perf_counter()
    last_t, last_step = t0, step
    models = stage.accumulate_models()
    running: dict[str, list[float]] = {}
    try:
        while step < end_step:
            for a in range(cfg.grad_accum_steps):
                micro = step * cfg.grad_accum_steps + a
                gen = _seed_everything(cfg.seed, micro, acc.process_index)
                idx = batch_indices(stage.n_train(), cfg.batch_size, micro, cfg.seed,
                                    acc.process_index, acc.num_processes)
                batch = stage.batch(idx, acc.device)
                for m in models:
                    m.train()
                with acc.accumulate(*models):
                    out = stage.train_step(batch, StepContext(acc, step, micro, gen, cfg.grad_clip))
                for k, v in out.items():
                    running.setdefault(k, []).append(float(v))
            step += 1
            if step % cfg.log_every == 0 or step == end_step:
                now = time.perf_counter()
                rate = (step - last_step) * cfg.batch_size * cfg.grad_accum_steps / max(now - last_t, 1e-9)
                row = {"step": step, **{k: float(np.mean(v)) for k, v in running.items()},
                       "lr": float(_first_lr(stage)), "samples_per_s": rate,
                       "elapsed_s": now - t0}
                running.clear()
                last_t, last_step = now, step
                if metrics is not None:
                    metrics.log(row)
                bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4f}", sps=f"{rate:.0f}")
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.max_steps:
                _evaluate(stage, acc, val_metrics, step)
            if cfg.sample_every and step % cfg.sample_every == 0 and acc.is_main_process:
                stage.save_samples(run_dir / "samples", step)
            if step % cfg.checkpoint_every == 0 or step == end_step:
                _save_checkpoint(acc, run_dir, step, cfg.keep_checkpoints)
            bar.update(1)
    finally:
        bar.close()
    train_s = time.perf_counter() - t0

    # 4. finished: evaluate, samples, export (main process)
    result: dict[str, Any] = {"step": step, "resumed_from": resumed_from,
                              "train_s": train_s, "models": {}, "eval": {}}
    if step >= cfg.max_steps:
        result["eval"] = _evaluate(stage, acc, val_metrics, step)
        if acc.is_main_process:
            stage.save_samples(run_dir / "samples", step)
            result["models"] = {k: str(v) for k, v in stage.export(run_dir / "model").items()}
            (run_dir / "eval.json").write_text(json.dumps(result["eval"], indent=2))
    if metrics is not None:
        metrics.close()
        val_metrics.close()
    acc.wait_for_everyone()
    acc.end_training()
    return result


def _evaluate(stage: Stage, acc, metrics: _Metrics | None, step: int) -> dict[str, float]:
    out: dict[str, float] = {}
    if acc.is_main_process:
        with torch.no_grad():
            out = stage.evaluate()
        if metrics is not None and out:
            metrics.log({"step": step, **{k: v for k, v in out.items() if isinstance(v, float | int)}})
        logger.info("%s step %d: %s", stage.name, step,
                    ", ".join(f"{k}={v:.4f}" for k, v in out.items() if isinstance(v, float)))
    acc.wait_for_everyone()
    return out


def _first_lr(stage: Stage) -> float:
    for obj in stage.checkpointed():
        groups = getattr(obj, "param_groups", None)
        if groups:
            return groups[0]["lr"]
    return float("nan")


def iter_minibatches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices covering ``range(n)`` (evaluation batches)."""
    for i in range(0, n, batch_size):
        yield slice(i, min(n, i + batch_size))
