"""Training jobs run in parallel worker processes, resumably, and the alpha x beta sweep built on them.

A ``TrainJob`` is one training run followed by a teacher-forced evaluation on the task's test split; its
result JSON (``<root>/<job.name>/result.json``) marks it finished, so a rerun skips it. ``run_jobs`` runs a list
of jobs in a ``concurrent.futures.ProcessPoolExecutor`` with ``workers`` processes (each limited to
cpu_count // workers torch threads) or inline when workers == 1.

The sweep trains one model per (alpha, beta, seed) cell of the grid, summarises each cell over its seeds (mean
of the per-seed mean coupling r, and of answer accuracy), writes ``<root>/cells/<cell>.json`` and draws heatmaps
of both through pna.analysis.plots. It is also the ``pna sweep`` subcommand.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from pna.analysis import coupling, plot_sweep_heatmap
from pna.evaluate import Evaluation, evaluate
from pna.tasks import MAX_LEN, make_split
from pna.train import TrainConfig, load_checkpoint, resolve_device, train

ALPHAS = (0.0, 0.01, 0.05, 0.1, 0.2, 0.5)
BETAS = (0.0, 0.05, 0.1, 0.2, 0.4)
RESULT_FILE = "result.json"
EVAL_FILE = "test_eval.npz"


@dataclass(frozen=True)
class TrainJob:
    """One training run and its test evaluation.

    name: unique folder name under the jobs root; task/arch/variant/loss_mode/alpha/beta/seed: as TrainConfig;
    train_overrides: further TrainConfig fields (sizes, epochs, ...); n_test: test examples evaluated
    (None: the whole split); eval_batch_size: batch size of the evaluation pass.
    """

    name: str
    task: str
    arch: str
    variant: str
    loss_mode: str
    alpha: float
    beta: float
    seed: int
    train_overrides: dict[str, Any] = field(default_factory=dict)
    n_test: int | None = None
    eval_batch_size: int = 64


def job_dir(root: str | Path, job: TrainJob) -> Path:
    """The folder holding one job's training outputs, evaluation arrays and result JSON."""
    return Path(root) / job.name


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (to a temporary name, then rename), so a half-written file never looks finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def run_job(job: TrainJob, root: str | Path) -> dict[str, Any]:
    """Train, evaluate on the test split and write the result JSON; a finished job's JSON is read back instead.

    The result holds the job's fields, the checkpoint path, the best validation metrics, teacher-forced token
    and answer accuracy, and the coupling summary (mean r, CI, n) of its test evaluation.
    """
    out = job_dir(root, job)
    result_path = out / RESULT_FILE
    if result_path.exists():
        return json.loads(result_path.read_text(encoding="utf-8"))
    cfg = TrainConfig(task=job.task, arch=job.arch, variant=job.variant, loss_mode=job.loss_mode,
                      alpha=job.alpha, beta=job.beta, seed=job.seed, out_dir=str(out / "train"),
                      **job.train_overrides)
    trained = train(cfg)
    device = resolve_device(cfg.device)
    model, _ = load_checkpoint(trained.best_checkpoint, device)
    examples = make_split(job.task, "test", n=job.n_test)
    evaluation = evaluate(model, examples, max_len=MAX_LEN[job.task], batch_size=job.eval_batch_size,
                          device=device)
    evaluation.save(out / EVAL_FILE)
    summary = coupling(evaluation.entropy, evaluation.halt_logits, evaluation.result_pos, evaluation.lengths)
    result = {
        "job": asdict(job),
        "checkpoint": str(trained.best_checkpoint),
        "best_val": trained.best_val,
        "token_accuracy": evaluation.token_accuracy,
        "answer_accuracy": evaluation.answer_accuracy,
        "coupling": summary.to_dict(),
    }
    _write_json(result_path, result)
    return result


def load_evaluation(root: str | Path, job: TrainJob) -> Evaluation:
    """The test-split arrays a finished job saved."""
    return Evaluation.load(job_dir(root, job) / EVAL_FILE)


def _init_worker(threads: int) -> None:
    """Worker process set-up: share the CPU cores between the workers."""
    torch.set_num_threads(threads)


def run_jobs(jobs: Sequence[TrainJob], root: str | Path, workers: int = 1, desc: str = "training") -> list[dict]:
    """Run every job (finished ones are read back), ``workers`` at a time; results in job order.

    workers == 1 runs inline in this process; more uses a ProcessPoolExecutor (spawned processes).
    """
    if workers < 1:
        raise ValueError(f"workers: must be >= 1, got {workers}")
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError("jobs: names must be unique")
    results: list[dict | None] = [None] * len(jobs)
    todo = []
    for i, job in enumerate(jobs):
        done = job_dir(root, job) / RESULT_FILE
        if done.exists():
            results[i] = json.loads(done.read_text(encoding="utf-8"))
        else:
            todo.append(i)
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="run")
    if workers == 1 or len(todo) <= 1:
        for i in todo:
            results[i] = run_job(jobs[i], root)
            bar.update()
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = torch.multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(run_job, jobs[i], root): i for i in todo}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    bar.close()
    return [r for r in results if r is not None]


@dataclass
class SweepResult:
    """Grid summaries: mean_r and accuracy (len(alphas), len(betas)), each the mean over the cell's seeds of
    the per-seed mean coupling r / teacher-forced answer accuracy (NaN where no seed gave a usable r);
    seeds: seeds per cell; heatmaps: paths of the PNGs written."""

    alphas: list[float]
    betas: list[float]
    seeds: list[int]
    mean_r: np.ndarray
    accuracy: np.ndarray
    heatmaps: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (NaN written as null)."""
        def clean(grid: np.ndarray) -> list[list[float | None]]:
            return [[None if math.isnan(v) else float(v) for v in row] for row in grid]
        return {"alphas": self.alphas, "betas": self.betas, "seeds": self.seeds, "mean_r": clean(self.mean_r),
                "accuracy": clean(self.accuracy), "heatmaps": self.heatmaps}


def cell_name(alpha: float, beta: float) -> str:
    """Folder-safe name of a grid cell, e.g. 'a0.05_b0.1'."""
    return f"a{alpha:g}_b{beta:g}"


def sweep_jobs(
    alphas: Sequence[float],
    betas: Sequence[float],
    seeds: Sequence[int],
    task: str = "parity",
    arch: str = "ssm",
    variant: str = "default",
    loss_mode: str = "corrected",
    train_overrides: dict[str, Any] | None = None,
    n_test: int | None = None,
) -> list[TrainJob]:
    """One TrainJob per (alpha, beta, seed), named '<cell>_s<seed>'."""
    for name, values in (("alphas", alphas), ("betas", betas), ("seeds", seeds)):
        if not values:
            raise ValueError(f"{name}: empty")
    for name, values in (("alphas", alphas), ("betas", betas)):
        if any(v < 0 or not math.isfinite(v) for v in values):
            raise ValueError(f"{name}: every value must be finite and >= 0, got {list(values)}")
    return [
        TrainJob(name=f"{cell_name(a, b)}_s{s}", task=task, arch=arch, variant=variant, loss_mode=loss_mode,
                 alpha=a, beta=b, seed=s, train_overrides=dict(train_overrides or {}), n_test=n_test)
        for a in alphas for b in betas for s in seeds
    ]


def run_sweep(
    root: str | Path,
    alphas: Sequence[float] = ALPHAS,
    betas: Sequence[float] = BETAS,
    seeds: Sequence[int] = (0, 1, 2),
    workers: int = 1,
    **job_kwargs: Any,
) -> SweepResult:
    """Run the sweep's jobs under root/runs, write root/cells/<cell>.json and the two heatmaps under root.

    job_kwargs go to ``sweep_jobs`` (task, arch, variant, loss_mode, train_overrides, n_test).
    """
    root = Path(root)
    jobs = sweep_jobs(alphas, betas, seeds, **job_kwargs)
    results = run_jobs(jobs, root / "runs", workers=workers, desc="sweep")
    by_name = {r["job"]["name"]: r for r in results}
    mean_r = np.full((len(alphas), len(betas)), np.nan)
    accuracy = np.full((len(alphas), len(betas)), np.nan)
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            cell = [by_name[f"{cell_name(a, b)}_s{s}"] for s in seeds]
            rs = [c["coupling"]["mean"] for c in cell if c["coupling"]["mean"] is not None]
            accs = [c["answer_accuracy"] for c in cell]
            mean_r[i, j] = float(np.mean(rs)) if rs else np.nan
            accuracy[i, j] = float(np.mean(accs))
            _write_json(root / "cells" / f"{cell_name(a, b)}.json", {
                "alpha": a, "beta": b, "seeds": list(seeds), "mean_r": None if not rs else mean_r[i, j],
                "per_seed_r": [c["coupling"]["mean"] for c in cell], "answer_accuracy": accuracy[i, j],
                "per_seed_answer_accuracy": accs,
            })
    heatmaps = [
        str(plot_sweep_heatmap(mean_r, np.array(alphas), np.array(betas), root / "sweep_mean_r.png",
                               label="mean r", fmt=".2f", title=f"mean coupling r ({len(seeds)} seed(s) per cell)")),
        str(plot_sweep_heatmap(accuracy, np.array(alphas), np.array(betas), root / "sweep_accuracy.png",
                               label="answer accuracy", fmt=".2f", title="teacher-forced answer accuracy")),
    ]
    result = SweepResult(list(alphas), list(betas), list(seeds), mean_r, accuracy, heatmaps)
    _write_json(root / "sweep.json", result.to_dict())
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `pna sweep`."""
    parser.add_argument("--out", default="runs/sweep", help="output folder (resumable)")
    parser.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    parser.add_argument("--betas", type=float, nargs="+", default=list(BETAS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--task", choices=["parity", "sorting"], default="parity")
    parser.add_argument("--arch", choices=["ssm", "transformer"], default="ssm")
    parser.add_argument("--loss-mode", choices=["corrected", "faithful"], default="corrected")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    parser.add_argument("--n-test", type=int, default=None, help="test examples per run (default: all)")
    parser.add_argument("--tiny", action="store_true", help="the trainer's tiny models (smoke tests, CPU)")
    parser.add_argument("--max-epochs", type=int, default=None, help="override the trainer's max_epochs")
    parser.add_argument("--device", default="auto", help="training device (default: cuda if available)")


def run(args: argparse.Namespace) -> int:
    """`pna sweep`: run the grid and print where the cell JSONs and heatmaps are."""
    if args.workers < 1:
        raise SystemExit("pna sweep: error: --workers must be >= 1")
    overrides: dict[str, Any] = {"tiny": args.tiny, "device": args.device, "quiet": args.workers > 1}
    if args.max_epochs is not None:
        overrides["max_epochs"] = args.max_epochs
    result = run_sweep(args.out, args.alphas, args.betas, args.seeds, workers=args.workers, task=args.task,
                       arch=args.arch, loss_mode=args.loss_mode, train_overrides=overrides, n_test=args.n_test)
    print(json.dumps(result.to_dict(), indent=2))
    return 0
