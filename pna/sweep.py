"""The alpha x beta sweep (``pna sweep``) and the train-then-evaluate job it and ``pna reproduce`` run.

``train_eval_job`` makes a pna.runner Job that trains one model and evaluates it teacher-forced on the task's
test split; its identity is the whole run-defining TrainConfig plus the evaluation settings, so a job whose
settings changed (arch, task, epochs, ...) runs in a new folder and an old result is never reused for it.

The sweep trains one model per (alpha, beta, seed) cell of the grid, summarises each cell over its seeds (mean
of the per-seed mean coupling r, and of answer accuracy), writes ``<root>/cells/<cell>.json`` and
``<root>/sweep.json`` (with the settings they came from) and draws heatmaps of both through
pna.analysis.plots, all from this invocation's jobs.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pna import atomic, runner
from pna.analysis import coupling, plot_sweep_heatmap
from pna.evaluate import Evaluation, evaluate
from pna.train import TrainConfig, load_checkpoint, resolve_device, train

ALPHAS = (0.0, 0.01, 0.05, 0.1, 0.2, 0.5)
BETAS = (0.0, 0.05, 0.1, 0.2, 0.4)
EVAL_FILE = "test_eval.npz"
TRAIN_EVAL_FN = "pna.sweep:train_and_evaluate"


def train_eval_job(label: str, train_fields: dict[str, Any], n_test: int | None = None, eval_batch_size: int = 64,
                   device: str = "auto", quiet: bool = True) -> runner.Job:
    """A Job training TrainConfig(**train_fields) and evaluating it on n_test test examples (None: all).

    train_fields are validated here (ValueError naming the field), before anything runs; their run-defining
    part (TrainConfig.identity) and the evaluation settings are the job's identity; device and quiet are options.
    """
    if n_test is not None and not (isinstance(n_test, int) and not isinstance(n_test, bool) and n_test >= 1):
        raise ValueError(f"n_test: expected an integer >= 1 (or all), got {n_test!r}")
    if not (isinstance(eval_batch_size, int) and eval_batch_size >= 1):
        raise ValueError(f"eval_batch_size: expected an integer >= 1, got {eval_batch_size!r}")
    cfg = TrainConfig(**{**train_fields, "device": device, "quiet": quiet})
    return runner.Job(fn=TRAIN_EVAL_FN, label=label,
                      config={"train": cfg.identity(), "n_test": n_test, "eval_batch_size": eval_batch_size,
                              "trace_accuracy_over": "task_examples"},
                      options={"device": device, "quiet": quiet})


def train_and_evaluate(config: dict[str, Any], run_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Job function of train_eval_job: train in run_dir/train, evaluate on the test split (of the run's
    data_protocol, in its layout), save the arrays.

    Returns checkpoint and evaluation (paths relative to run_dir), the best validation metrics, teacher-forced
    token, trace and answer accuracy and the coupling summary (mean r, CI, n) of the test evaluation.
    """
    train_dir = atomic.make_dirs(run_dir / "train", base=run_dir)
    cfg = TrainConfig(**config["train"], out_dir=str(train_dir), device=options.get("device", "auto"),
                      quiet=options.get("quiet", True))
    trained = train(cfg)
    device = resolve_device(cfg.device)
    model, _ = load_checkpoint(trained.best_checkpoint, device)
    examples = cfg.split("test", config["n_test"])
    evaluation = evaluate(model, examples, max_len=cfg.max_len(), batch_size=config["eval_batch_size"],
                          device=device, protocol=cfg.data_protocol)
    evaluation.save(run_dir / EVAL_FILE)
    summary = coupling(evaluation.entropy, evaluation.halt_logits, evaluation.result_pos, evaluation.lengths)
    return {
        "checkpoint": str(Path(trained.best_checkpoint).relative_to(run_dir)),
        "evaluation": EVAL_FILE,
        "epochs": len(trained.history),
        "best_val": trained.best_val,
        "token_accuracy": evaluation.token_accuracy,
        "trace_accuracy": task_trace_accuracy(evaluation, examples, cfg.task),
        "answer_accuracy": evaluation.answer_accuracy,
        "coupling": summary.to_dict(),
    }


def task_trace_accuracy(evaluation: Evaluation, examples: list, task: str) -> float:
    """Trace accuracy over the test examples of the run's own task (meta kind == task): the original's mixed
    parity split holds 30% two-operand sums whose worked step is a trace too, and "learned parity" is judged on
    the parity examples. All examples where none is of that kind."""
    own = [i for i, ex in enumerate(examples) if ex.meta.get("kind") == task]
    if not own or len(own) == evaluation.n:
        return evaluation.trace_accuracy
    return float(evaluation.trace_correct[own].sum() / max(1, evaluation.trace_count[own].sum()))


def job_file(root: str | Path, job: runner.Job, relative: str) -> Path:
    """A file of a job's folder under root, from the relative path its result gives."""
    return Path(root) / job.dir_name / relative


def load_evaluation(root: str | Path, job: runner.Job) -> Evaluation:
    """The test-split arrays a finished train_eval_job saved."""
    return Evaluation.load(job_file(root, job, EVAL_FILE))


@dataclass
class SweepResult:
    """Grid summaries: mean_r and accuracy (len(alphas), len(betas)), each the mean over the cell's seeds of
    the per-seed mean coupling r / teacher-forced answer accuracy (NaN where no seed gave a usable r);
    seeds: seeds per cell; heatmaps: paths of the PNGs written (relative to the sweep root); settings: the
    train fields shared by every cell."""

    alphas: list[float]
    betas: list[float]
    seeds: list[int]
    mean_r: np.ndarray
    accuracy: np.ndarray
    heatmaps: list[str]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (NaN written as null)."""
        def clean(grid: np.ndarray) -> list[list[float | None]]:
            return [[None if math.isnan(v) else float(v) for v in row] for row in grid]
        return {"alphas": self.alphas, "betas": self.betas, "seeds": self.seeds, "mean_r": clean(self.mean_r),
                "accuracy": clean(self.accuracy), "heatmaps": self.heatmaps, "settings": self.settings}


def cell_name(alpha: float, beta: float) -> str:
    """Folder-safe name of a grid cell, e.g. 'a0.05_b0.1'."""
    return f"a{alpha:g}_b{beta:g}"


def _check_grid(alphas: Sequence[float], betas: Sequence[float], seeds: Sequence[int]) -> None:
    for name, values in (("alphas", alphas), ("betas", betas), ("seeds", seeds)):
        if not values:
            raise ValueError(f"{name}: empty")
        if len(set(values)) != len(values):
            raise ValueError(f"{name}: repeated values in {list(values)}")
    for name, values in (("alphas", alphas), ("betas", betas)):
        if any(v < 0 or not math.isfinite(v) for v in values):
            raise ValueError(f"{name}: every value must be finite and >= 0, got {list(values)}")


def sweep_jobs(alphas: Sequence[float], betas: Sequence[float], seeds: Sequence[int],
               train_fields: dict[str, Any] | None = None, n_test: int | None = None, device: str = "auto",
               quiet: bool = True) -> list[runner.Job]:
    """One train_eval_job per (alpha, beta, seed), labelled '<cell>_s<seed>'; train_fields: the other
    TrainConfig fields (task, arch, variant, loss_mode, sizes, epochs, ...)."""
    _check_grid(alphas, betas, seeds)
    return [train_eval_job(f"{cell_name(a, b)}_s{s}", {**(train_fields or {}), "alpha": a, "beta": b, "seed": s},
                           n_test=n_test, device=device, quiet=quiet)
            for a in alphas for b in betas for s in seeds]


def run_sweep(root: str | Path, alphas: Sequence[float] = ALPHAS, betas: Sequence[float] = BETAS,
              seeds: Sequence[int] = (0, 1, 2), workers: int = 1, base: str | Path | None = None,
              **job_kwargs: Any) -> SweepResult:
    """Run the sweep's jobs under root/runs, write root/cells/<cell>.json, root/sweep.json and the heatmaps.

    job_kwargs go to ``sweep_jobs`` (train_fields, n_test, device, quiet); base: the output root whose manifests
    record root (default root itself).
    """
    root = Path(root)
    jobs = sweep_jobs(alphas, betas, seeds, **job_kwargs)
    atomic.make_dirs(root, base if base is not None else root)
    results = runner.run_jobs(jobs, root / "runs", workers=workers, desc="sweep", base=root)
    by_label = {job.label: r for job, r in zip(jobs, results)}
    mean_r = np.full((len(alphas), len(betas)), np.nan)
    accuracy = np.full((len(alphas), len(betas)), np.nan)
    atomic.remove_written(root / "cells")  # cells of an earlier grid or settings are not this sweep's
    atomic.make_dirs(root / "cells", base=root)
    settings = {k: v for k, v in jobs[0].config["train"].items() if k not in ("alpha", "beta", "seed")}
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            cell = [by_label[f"{cell_name(a, b)}_s{s}"] for s in seeds]
            rs = [c["coupling"]["mean"] for c in cell if c["coupling"]["mean"] is not None]
            accs = [c["answer_accuracy"] for c in cell]
            mean_r[i, j] = float(np.mean(rs)) if rs else np.nan
            accuracy[i, j] = float(np.mean(accs))
            atomic.write_json(root / "cells" / f"{cell_name(a, b)}.json", {
                "alpha": a, "beta": b, "seeds": list(seeds), "mean_r": None if not rs else mean_r[i, j],
                "per_seed_r": [c["coupling"]["mean"] for c in cell], "answer_accuracy": accuracy[i, j],
                "per_seed_answer_accuracy": accs, "settings": settings,
                "runs": [f"runs/{job.dir_name}" for job in jobs if job.label.startswith(cell_name(a, b) + "_s")],
            })
    heatmaps = [
        plot_sweep_heatmap(mean_r, np.array(alphas), np.array(betas), root / "sweep_mean_r.png",
                           label="mean r", fmt=".2f", title=f"mean coupling r ({len(seeds)} seed(s) per cell)"),
        plot_sweep_heatmap(accuracy, np.array(alphas), np.array(betas), root / "sweep_accuracy.png",
                           label="answer accuracy", fmt=".2f", title="teacher-forced answer accuracy"),
    ]
    result = SweepResult(list(alphas), list(betas), list(seeds), mean_r, accuracy,
                         [str(Path(p).relative_to(root)) for p in heatmaps], settings)
    atomic.write_json(root / "sweep.json", result.to_dict())
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `pna sweep`."""
    parser.add_argument("--out", default="runs/sweep", help="output folder (resumable: runs whose whole config "
                        "matches are reused, changed settings train new runs)")
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
    parser.add_argument("--n-train", type=int, default=None, help="training examples per run")
    parser.add_argument("--device", default="auto", help="training device (default: cuda if available)")
    parser.add_argument("--force", action="store_true",
                        help="delete what earlier sweeps wrote in --out (only the files they wrote) first")


# field named by an error -> the `pna sweep` flag that sets it
SWEEP_FLAGS = {"alphas": "--alphas", "betas": "--betas", "seeds": "--seeds", "seed": "--seeds",
               "device": "--device", "max_epochs": "--max-epochs", "n_train": "--n-train", "n_test": "--n-test"}


def run(args: argparse.Namespace) -> int:
    """`pna sweep`: check every argument, run the grid and print where the cell JSONs and heatmaps are."""
    if args.workers < 1:
        raise ValueError(f"--workers: expected an integer >= 1, got {args.workers}")
    for flag, value in (("--n-test", args.n_test), ("--max-epochs", args.max_epochs), ("--n-train", args.n_train)):
        if value is not None and value < 1:
            raise ValueError(f"{flag}: expected an integer >= 1, got {value}")
    fields: dict[str, Any] = {"task": args.task, "arch": args.arch, "loss_mode": args.loss_mode, "tiny": args.tiny}
    if args.max_epochs is not None:
        fields["max_epochs"] = args.max_epochs
    if args.n_train is not None:
        fields["n_train"] = args.n_train
    try:
        sweep_jobs(args.alphas, args.betas, args.seeds, fields, n_test=args.n_test, device=args.device)
    except ValueError as exc:  # name the flag: "seed: ..." -> "--seeds: ..."
        name, _, rest = str(exc).partition(":")
        raise ValueError(f"{SWEEP_FLAGS.get(name, name)}:{rest}") from None
    out = runner.check_out_dir(args.out, "--out")
    if args.force and out.is_dir():
        atomic.remove_written(out)
    out.mkdir(parents=True, exist_ok=True)
    result = run_sweep(out, args.alphas, args.betas, args.seeds, workers=args.workers, train_fields=fields,
                       n_test=args.n_test, device=args.device, quiet=args.workers > 1)
    print(json.dumps(result.to_dict(), indent=2))
    return 0
