"""What `pna reproduce` will train and how long it will take here, from a short timing probe.

The probe times a few real training steps (forward, loss, backward, optimizer step) of every (task, arch, size)
the plan trains, on the device the run uses; the estimate multiplies each job's step count (its split size,
batch size and maximum epochs: early stopping can only make it shorter) by the measured seconds per step, adds
the evaluation passes (a forward pass costs about a third of a training step), and divides by the number of
parallel workers. Nothing here is written into report.md (a resumed report stays byte-identical): the plan and
the estimate go to the terminal only.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch

from pna.loss import thermodynamic_loss
from pna.models import build_model
from pna.tasks import MAX_LEN, make_loader, make_split
from pna.tokenizer import TOKENIZER
from pna.train import TrainConfig, resolve_device

# A forward pass (evaluation, validation) relative to a training step.
FORWARD_SHARE = 1 / 3


@dataclass(frozen=True)
class PlannedRun:
    """One training job of the plan: its stage, label and trainer config (split sizes resolved)."""

    stage: str
    label: str
    cfg: TrainConfig
    n_eval: int = 0

    @property
    def kind(self) -> tuple[str, str, str, str]:
        """What its step time depends on: (task, arch, variant, model sizes)."""
        return (self.cfg.task, self.cfg.arch, self.cfg.variant, repr(sorted(self.cfg.model_overrides().items())))

    @property
    def steps(self) -> int:
        """Training steps at most (every epoch run) plus validation / test forward passes in step units."""
        n_train, n_val = self.cfg.split_sizes()
        n_train = 8000 if n_train is None else n_train
        n_val = 1000 if n_val is None else n_val
        per_epoch = math.ceil(n_train / self.cfg.batch_size)
        forward_batches = self.cfg.max_epochs * math.ceil(n_val / self.cfg.batch_size) + math.ceil(
            self.n_eval / self.cfg.batch_size)
        return self.cfg.max_epochs * per_epoch + math.ceil(forward_batches * FORWARD_SHARE)


def probe_step_seconds(cfg: TrainConfig, steps: int = 3, threads: int | None = None) -> float:
    """Measured seconds of one training step of cfg's model on cfg's task and device (median of `steps` timed
    steps after one untimed warm-up step), with `threads` CPU threads (None: torch's current setting; the
    training workers share the cores, see pna.runner)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _timed_steps(cfg, steps)
    finally:
        torch.set_num_threads(previous)


def _timed_steps(cfg: TrainConfig, steps: int) -> float:
    device = resolve_device(cfg.device)
    torch.manual_seed(0)
    model = build_model(cfg.arch, TOKENIZER.vocab_size, cfg.variant, **cfg.model_overrides()).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    examples = make_split(cfg.task, "val", n=cfg.batch_size)
    batch = next(iter(make_loader(examples, cfg.batch_size, False, 0, MAX_LEN[cfg.task])))
    batch = {k: v.to(device) for k, v in batch.items()}
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        out = model(batch["input_ids"])
        loss, _ = thermodynamic_loss(out.logits, out.halt_logits, out.entropy, batch, cfg.alpha, cfg.beta, cfg.gamma,
                                     cfg.loss_mode)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@dataclass(frozen=True)
class Estimate:
    """Estimated seconds per stage and in all (wall time with `workers` parallel processes); probed: seconds per
    training step by "task arch variant" (the probe's measurements)."""

    stage_seconds: dict[str, float]
    workers: int
    probed: dict[str, float]

    @property
    def total_seconds(self) -> float:
        return sum(self.stage_seconds.values())


def estimate(runs: Sequence[PlannedRun], step_seconds: Callable[[TrainConfig], float], workers: int) -> Estimate:
    """Wall seconds per stage: the sum over its runs of steps x step_seconds(cfg), probed once per run kind,
    divided by min(workers, runs in the stage) (independent jobs in parallel processes)."""
    if workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers}")
    measured: dict[tuple, float] = {}
    per_stage: dict[str, list[float]] = {}
    for run in runs:
        if run.kind not in measured:
            measured[run.kind] = step_seconds(run.cfg)
        per_stage.setdefault(run.stage, []).append(run.steps * measured[run.kind])
    probed = {" ".join(kind[:3]): seconds for kind, seconds in measured.items()}
    return Estimate({stage: sum(s) / min(workers, len(s)) for stage, s in per_stage.items()}, workers, probed)


def format_duration(seconds: float) -> str:
    """'1 h 05 min', '12 min 30 s' or '45 s'."""
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def plan_text(runs: Sequence[PlannedRun], est: Estimate, device: str, extra: Iterable[str] = ()) -> str:
    """The plan (one line per training job) and the estimate, for the terminal."""
    lines = [f"plan: {len(runs)} training jobs on {device}, {est.workers} worker(s)"]
    for run in runs:
        n_train, _ = run.cfg.split_sizes()
        lines.append(f"  {run.stage:<10} {run.label:<34} {run.cfg.task:<10} {run.cfg.arch:<11} "
                     f"n_train {n_train or 8000:>5}  <= {run.cfg.max_epochs} epochs  ({run.steps} steps)")
    lines += [f"  {line}" for line in extra]
    lines.append("probe (s per training step): " + ", ".join(f"{k} {v:.3f}" for k, v in est.probed.items()))
    lines.append("estimate (training and evaluation passes, from a timing probe of each model kind here; free "
                 "generation and analysis not included): " + ", ".join(
                     f"{stage} {format_duration(s)}" for stage, s in est.stage_seconds.items())
                 + f"; total {format_duration(est.total_seconds)}")
    hours = est.total_seconds * est.workers / 3600
    how = "probed seconds per step x each job's step count, summed over jobs"
    if device.startswith("cuda"):
        lines.append(f"GPU-hours: {hours:.2f} ({how})")
    else:
        lines.append(f"{device}-hours: {hours:.2f} ({how}); GPU-hours are measured the same way by running "
                     "--dry-run on the GPU machine (--device cuda)")
    return "\n".join(lines)


def planned_runs(stage_jobs: dict[str, Sequence[Any]], device: str) -> list[PlannedRun]:
    """PlannedRun of every pna.sweep.train_eval_job in stage_jobs (stage -> jobs)."""
    runs = []
    for stage, jobs in stage_jobs.items():
        for job in jobs:
            cfg = TrainConfig(**job.config["train"], device=device, quiet=True)
            n_eval = job.config.get("n_test") or 1000
            runs.append(PlannedRun(stage, job.label, cfg, n_eval))
    return runs


def plan_stages(profile: Any, jobs: dict[str, Any], device: str, skip_sweep: bool, skip_transfer: bool = False,
                ) -> list[PlannedRun]:
    """Every training job of a `pna reproduce` invocation: the main runs (jobs: both protocols', the faithful
    groups included), (unless skip_transfer) the transfer fine-tuning of each source of
    pna.reproduce.stages.transfer_sources, and (unless skip_sweep) the sweep cells."""
    from pna.sweep import sweep_jobs
    from pna.transfer import TransferSettings

    from .stages import transfer_sources

    runs = planned_runs({"main runs": list(jobs.values())}, device)
    settings = TransferSettings(**profile.transfer)
    for sources in ({} if skip_transfer else transfer_sources(profile, jobs)).values():
        for label, source_job, seed in sources:
            source = TrainConfig(**source_job.config["train"])
            cfg = settings.train_config(source, "planned", seed, "planned", device)
            runs.append(PlannedRun("transfer", label, cfg, settings.n_test or 1000))
    if not skip_sweep:
        runs += planned_runs({"sweep": sweep_jobs(profile.sweep_alphas, profile.sweep_betas, profile.sweep_seeds,
                                                  train_fields=profile.train["ssm"], n_test=profile.n_test,
                                                  device=device)}, device)
    return runs


class OverallProgress:
    """One progress bar over the whole invocation, in estimated seconds of work: inside a stage it advances with
    the clock (never past that stage's estimate), and at each stage's end it jumps to the stages done so far, so
    its ETA is the estimate's remainder, corrected as stages finish. A daemon thread refreshes it every second."""

    def __init__(self, est: Estimate, desc: str = "reproduce (estimated seconds of work)",
                 disable: bool | None = None) -> None:
        """disable: None shows the bar only where stderr is a terminal (tqdm's rule)."""
        import threading

        from tqdm import tqdm

        self._est = est
        self._done = 0.0  # estimated seconds of the stages finished
        self._stage = ""
        self._start = time.perf_counter()
        self._bar = tqdm(total=max(1, round(est.total_seconds)), unit="s", desc=desc, disable=disable,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True, name="overall-progress")
        self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                budget = self._est.stage_seconds.get(self._stage, 0.0)
                position = self._done + min(time.perf_counter() - self._start, 0.99 * budget)
                if not self._bar.disable:
                    self._bar.n = min(self._bar.total, round(position))
                    self._bar.refresh()

    def start(self, stage: str) -> None:
        """A planned stage (a key of the estimate's stage_seconds) begins."""
        with self._lock:
            self._stage, self._start = stage, time.perf_counter()

    def finish(self, stage: str) -> None:
        """A planned stage ends: the bar jumps to the end of it."""
        with self._lock:
            self._done += self._est.stage_seconds.get(stage, 0.0)
            self._stage = ""
            if not self._bar.disable:
                self._bar.n = min(self._bar.total, round(self._done))
                self._bar.refresh()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._bar.close()
