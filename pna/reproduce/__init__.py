"""`pna reproduce`: train, analyse and report the original work's results beside a faithful and a corrected rerun.

Two protocols are run on the built-in synthetic tasks (no download):

* faithful: the original's groups as it ran them (E_ssm: SSM, alpha 0, beta 0.1, over several seeds, the
  headline cell; E_trans; the CE-only Transformer A; E_sort), with the original architectures
  (variant="faithful"), data (make_split(..., protocol="faithful")), loss (energy term without gradient, halt BCE
  over all positions), checkpoint rule and fp32, scored with the original's definitions (pna.analysis.faithful,
  the Phase-8 probe statistic for the Transformer, PAD-positive halt F1, pooled free generation with the
  lenient parse). The original set no seeds; its own spread of gradient-identical runs stands beside ours;
* corrected: the differentiable loss, the default SSM, our data, several seeds, halt F1 over positions before
  EOS, at the invocation's --alpha / --beta; for its SSMs, r and tau are also given under the original's
  definitions (pna.evaluate.definitions_side_by_side).

Then: free generation, transfer to arithmetic chains (zero-shot and after adaptation with a frozen halt head),
and (corrected protocol) an alpha x beta sweep. Everything lands in --out:
report.md, plots/*.png, timings.json and the JSON of every stage, each keyed by the hash of its whole config
(pna.runner): a rerun reads back exactly the stages whose config is unchanged, and runs the rest anew.
--force deletes only the files earlier invocations wrote (listed in their manifests) and starts over.

Modes: the default is sized for one GPU (paper sizes, 5 seeds); --quick for a 2-core CPU in under 15 minutes;
--tiny for a smoke test (a minute or two). The report lists exactly what a reduced mode changed (and which
stages it dropped). Before training, the plan and an estimate of its wall time here (from a timing probe of each
model kind, pna.reproduce.estimate) are printed, with the device-hours (GPU-hours on a GPU) it needs; --dry-run
stops there. A main run that did not learn its task (pna.reproduce.learning) is marked in the runs table and left
out of the headline cells.

Layout: profiles.py (modes and protocols), stages.py (the stages' computations), report.py (the report's
content); this module runs them in order.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from pna import analysis, atomic, runner
from pna.sweep import job_file, load_evaluation, run_sweep
from pna.train import TrainConfig
from pna.transfer import TransferSettings, transfer_job

from pna.tasks import first_answer_in

from .estimate import Estimate, OverallProgress, estimate, plan_stages, plan_text, probe_step_seconds
from .learning import mark_runs, per_run_free_generation
from .profiles import ARCHS, FAITHFUL_GROUPS, FULL, MAIN_RUNS, QUICK, TINY, OriginalGroup, Profile, Protocol, protocols
from .report import FIRST_TABLE_ROWS, ReportInputs, build_report
from .stages import (analyse_group, faithful_cell, faithful_generation_stage, faithful_run_name, generation_stage,
                     job_test_split, main_jobs, phase8_stage, pooled as stages_pooled, run_name, side_by_side_stage,
                     transfer_sources)

__all__ = ["FIRST_TABLE_ROWS", "FULL", "QUICK", "TINY", "Profile", "Protocol", "add_arguments", "announce", "run"]
# the field an error names -> the `pna reproduce` flag that sets it
FLAGS = {"alpha": "--alpha", "beta": "--beta", "device": "--device", "workers": "--workers"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `pna reproduce`."""
    parser.add_argument("--out", default="runs/reproduce", help="output folder (default runs/reproduce)")
    parser.add_argument("--quick", action="store_true", help="reduced run for a 2-core CPU (< 15 minutes)")
    parser.add_argument("--tiny", action="store_true", help="smoke test: tiny models, a few steps (wins over --quick)")
    parser.add_argument("--force", action="store_true",
                        help="delete what earlier invocations wrote in --out (only the files they wrote) and redo "
                        "every stage")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel training processes (default: 2 with --quick, else 1)")
    parser.add_argument("--alpha", type=float, default=0.05, help="energy weight of the main runs (default 0.05)")
    parser.add_argument("--beta", type=float, default=0.1, help="halt-BCE weight of the main runs (default 0.1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-sweep", action="store_true", help="leave the alpha x beta sweep out")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be trained and an estimate of its wall time here (from a short timing "
                        "probe), then stop")


def _plan(args: argparse.Namespace) -> tuple[Profile, int, dict[str, runner.Job]]:
    """The profile, number of workers and main jobs, every argument checked (ValueError naming the flag)."""
    profile = TINY if args.tiny else QUICK if args.quick else FULL
    workers = profile.workers if args.workers is None else args.workers
    if workers < 1:
        raise ValueError(f"--workers: expected an integer >= 1, got {workers}")
    for name in ("alpha", "beta"):
        value = getattr(args, name)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"--{name}: expected a finite number >= 0, got {value}")
    try:
        TrainConfig(device=args.device)
        jobs = main_jobs(profile, args.alpha, args.beta, args.device)
    except ValueError as exc:
        name, _, rest = str(exc).partition(":")
        raise ValueError(f"{FLAGS.get(name, name)}:{rest}") from None
    return profile, workers, jobs


def announce(args: argparse.Namespace, profile: Profile, workers: int, jobs: dict[str, runner.Job],
             step_seconds: Callable[[TrainConfig], float] | None = None) -> Estimate:
    """Print the plan and the estimated wall time (terminal only, never the report); returns the estimate.
    step_seconds: seconds per training step of a config (default: probe_step_seconds with each worker's share of
    the CPU threads)."""
    if step_seconds is None:
        threads = max(1, torch.get_num_threads() // workers)
        step_seconds = lambda cfg: probe_step_seconds(cfg, threads=threads)  # noqa: E731
    planned = plan_stages(profile, jobs, args.device, _skip_sweep(args, profile), _skip_transfer(profile))
    done = {k for k, job in jobs.items() if runner.finished_result(Path(args.out) / "runs" / job.dir_name, job)}
    planned = [r for r in planned if not (r.stage == "main runs" and r.label in done)]
    est = estimate(planned, step_seconds, workers)
    extra = [f"{len(done)} main run(s) already finished in --out are read back, not trained"] if done else []
    print(plan_text(planned, est, args.device, extra), flush=True)
    return est


def run(args: argparse.Namespace) -> int:
    """`pna reproduce`: every stage, then report.md; returns 0 (with --dry-run: the plan and estimate only)."""
    profile, workers, jobs = _plan(args)
    est = announce(args, profile, workers, jobs)
    if args.dry_run:
        return 0
    out = runner.check_out_dir(args.out, "--out")
    if args.force and out.is_dir():
        atomic.remove_written(out)
    out.mkdir(parents=True, exist_ok=True)
    protos = protocols(profile)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    overall = OverallProgress(est)
    overall.start("main runs")

    def lap(stage: str, planned: str = "", following: str = "") -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = now - clock
        clock = now
        if planned:
            overall.finish(planned)
        if following:
            overall.start(following)

    atomic.make_dirs(out / "runs", base=out)
    labels = list(jobs)
    results = dict(zip(labels, runner.run_jobs([jobs[k] for k in labels], out / "runs", workers=workers,
                                                desc="main runs", base=out)))
    runs = {k: {**results[k], "run_dir": f"runs/{jobs[k].dir_name}", "task": jobs[k].config["train"]["task"]}
            for k in labels}
    lap("main training runs + test evaluation", "main runs")
    faithful, corrected = protos
    by_name = {g.name: g for g in FAITHFUL_GROUPS}

    def group_jobs(group: OriginalGroup) -> list[runner.Job]:
        return [jobs[faithful_run_name(group, s)] for s in group.seeds(profile)]

    def evaluations(group: Sequence[runner.Job]) -> list:
        return [load_evaluation(out / "runs", j) for j in group]

    def checkpoint(job: runner.Job) -> Path:
        return job_file(out / "runs", job, results[job.label]["checkpoint"])

    # free generation first: its in-distribution accuracy is part of whether a parity run learned its task
    generation: dict[str, dict[str, Any]] = {}
    for arch in ARCHS:
        group = [jobs[run_name(corrected, "parity", arch, s)] for s in corrected.seeds]
        config = {"stage": "generation", "runs": [j.key for j in group], "n_free": profile.n_free,
                  "n_free_ood": profile.n_free_ood}
        generation[f"corrected_{arch}"] = runner.cached_stage(
            out / "generation", f"corrected_{arch}", config,
            lambda js=group: generation_stage([checkpoint(j) for j in js], profile, args.device), base=out)
    # the original's free generation of every faithful parity run: its in-distribution part decides whether the
    # run learned; the report's row is E_ssm's first seed
    faithful_generation: dict[str, dict[str, Any]] = {}
    for group in (g for g in FAITHFUL_GROUPS if g.task == "parity"):
        for job in group_jobs(group):
            config = {"stage": "faithful_generation", "run": job.key, "n_free": profile.n_free,
                      "n_free_ood": profile.n_free_ood}
            faithful_generation[job.label] = runner.cached_stage(
                out / "generation", job.label, config,
                lambda j=job: faithful_generation_stage(checkpoint(j), profile, args.device), base=out)
    generation["faithful_E_ssm"] = faithful_generation[group_jobs(by_name["E_ssm"])[0].label]
    free = per_run_free_generation([corrected], generation, run_name)
    free.update({label: gen["in_dist"]["accuracy"] for label, gen in faithful_generation.items()})
    lap("free generation")
    runs = mark_runs(runs, free)

    excluded: dict[str, int] = {}  # group -> its main runs left out because they did not learn

    def learned(name: str, group: Sequence[runner.Job]) -> list[runner.Job]:
        kept = [j for j in group if not (profile.exclude_unlearned and runs[j.label]["verdict"])]
        excluded[name] = len(group) - len(kept)
        return kept

    def analysed(name: str, group: Sequence[runner.Job]) -> None:
        if group:
            groups[name] = runner.cached_stage(
                out / "analysis", name, {"stage": "analysis", "runs": [j.key for j in group]},
                lambda: analyse_group(evaluations(group)), base=out)

    groups: dict[str, dict[str, Any]] = {}
    for task, arch in MAIN_RUNS:
        name = f"corrected_{task}_{arch}"
        analysed(name, learned(name, [jobs[run_name(corrected, task, arch, s)] for s in corrected.seeds]))
    kept = {name: learned(f"faithful_{name}", group_jobs(group)) for name, group in by_name.items()}
    for name in ("E_ssm", "E_trans", "E_sort"):
        analysed(f"faithful_{name}", kept[name])
    e_ssm, e_sort, group_a = kept["E_ssm"], kept["E_sort"], kept["A"]
    faithful_cells: dict[str, dict[str, Any]] = {}
    if e_ssm:
        parity_test = job_test_split(e_ssm[0])
        faithful_cells["E_ssm"] = runner.cached_stage(
            out / "analysis", "faithful_cell_E_ssm", {"stage": "faithful_cell", "runs": [j.key for j in e_ssm]},
            lambda: faithful_cell(evaluations(e_ssm), first_answer_in(parity_test), _seeds(e_ssm)), base=out)
    if e_sort:
        faithful_cells["E_sort"] = runner.cached_stage(
            out / "analysis", "faithful_cell_E_sort", {"stage": "faithful_cell", "runs": [j.key for j in e_sort]},
            lambda: faithful_cell(evaluations(e_sort), None, _seeds(e_sort)), base=out)
    if group_a:
        faithful_cells["A"] = runner.cached_stage(
            out / "analysis", "phase8_A", {"stage": "phase8", "run": group_a[0].key},
            lambda: phase8_stage(checkpoint(group_a[0]), group_a[0], args.device), base=out)
    ssm_corrected = [jobs[run_name(corrected, "parity", "ssm", s)] for s in corrected.seeds]
    both = runner.cached_stage(
        out / "analysis", "definitions_side_by_side", {"stage": "side_by_side", "runs": [j.key for j in ssm_corrected]},
        lambda: side_by_side_stage(evaluations(ssm_corrected)), base=out)
    lap("analysis", following="transfer")

    settings = TransferSettings(**profile.transfer)
    transfer_jobs = {} if _skip_transfer(profile) else {
        key: [transfer_job(label, checkpoint(src), settings, seed, args.device, source_key=src.key)
              for label, src, seed in sources]
        for key, sources in transfer_sources(profile, jobs).items()
    }
    flat = [job for group in transfer_jobs.values() for job in group]
    atomic.make_dirs(out / "transfer", base=out)
    done = dict(zip((j.key for j in flat), runner.run_jobs(flat, out / "transfer", workers=workers, desc="transfer",
                                                           base=out)))
    transfer = {key: [done[j.key] for j in group] for key, group in transfer_jobs.items()}
    lap("transfer", "transfer", following="sweep")

    sweep = None
    if not _skip_sweep(args, profile):
        sweep = run_sweep(out / "sweep", profile.sweep_alphas, profile.sweep_betas, profile.sweep_seeds,
                          workers=workers, base=out, train_fields=profile.train["ssm"], n_test=profile.n_test,
                          device=args.device)
    lap("sweep", "sweep")

    kept_ssm = {"faithful": e_ssm, "corrected": learned("corrected_parity_ssm", ssm_corrected)}
    plots = _plots(out, kept_ssm)
    lap("plots")
    invocation = {"alpha": args.alpha, "beta": args.beta, "device": args.device}
    report = build_report(profile, protos, invocation, ReportInputs(
        groups=groups, faithful=faithful_cells, side_by_side=both, generation=generation, transfer=transfer,
        sweep=sweep, plots=plots, runs=runs, excluded=excluded))
    path = atomic.write_text(out / "report.md", report.render())
    atomic.write_json(out / "timings.json", {"seconds": timings, "note": "stages found finished on disk were "
                                             "read back, not rerun"})
    overall.close()
    print(f"report: {path}")
    return 0


def _seeds(group: Sequence[runner.Job]) -> list[int]:
    """The training seeds of main jobs."""
    return [j.config["train"]["seed"] for j in group]


def _skip_sweep(args: argparse.Namespace, profile: Profile) -> bool:
    """Whether the sweep is left out (--skip-sweep, or the profile drops it)."""
    return args.skip_sweep or "sweep" in profile.dropped


def _skip_transfer(profile: Profile) -> bool:
    """Whether the transfer stage is left out (the profile drops it)."""
    return "transfer" in profile.dropped


def _plots(out: Path, ssm_runs: dict[str, Sequence[runner.Job]]) -> dict[str, str]:
    """The figures of SSM parity per protocol (the seeds given pooled: those that learned; none: no figure):
    curves around rp, cross-correlation, r histogram; the faithful protocol's with the original's entropy (bits of
    the channel-mean state); paths relative to out."""
    folder = atomic.make_dirs(out / "plots", base=out)
    paths: dict[str, str] = {}
    for name, group in ssm_runs.items():
        if not group:
            continue
        ev = stages_pooled([load_evaluation(out / "runs", job) for job in group])
        entropy = ev.channel_mean_entropy if name == "faithful" else ev.entropy
        series = (entropy, ev.halt_logits, ev.result_pos, ev.lengths)
        title = f"SSM parity, {name} protocol"
        analysis.plot_aligned_curves(*series, folder / f"curves_{name}.png", title=title)
        paths[f"curves_{name}"] = f"plots/curves_{name}.png"
        xcorr = analysis.cross_correlation(*series)
        analysis.plot_cross_correlation(xcorr.lags, xcorr.c, folder / f"xcorr_{name}.png",
                                        c_differenced=analysis.cross_correlation(*series, differenced=True).c,
                                        title=title)
        paths[f"xcorr_{name}"] = f"plots/xcorr_{name}.png"
        r = analysis.coupling(*series).r
        if r.size:
            analysis.plot_r_histogram(r, folder / f"r_hist_{name}.png", title=title)
            paths[f"r_hist_{name}"] = f"plots/r_hist_{name}.png"
    return paths
