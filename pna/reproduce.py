"""`pna reproduce`: train, analyse and report the original work's results beside a faithful and a corrected rerun.

Two protocols are run on the built-in synthetic tasks (no download):

* faithful: the original's loss (energy term without gradient), the original SSM architecture
  (variant="faithful"), one run (the original set no seeds, so its "seeds" were one checkpoint), halt F1
  counted over PAD positions as the original did;
* corrected: the differentiable loss, the default SSM, several seeds, halt F1 over positions before EOS.

Both train an SSM and a Transformer on parity and an SSM on sorting, then: coupling r and lag on the test split,
free generation (in-distribution and 9-10-bit OOD parity), transfer to arithmetic chains (zero-shot and after
adaptation with a frozen halt head), and (corrected protocol) an alpha x beta sweep. Everything lands in --out:
report.md, plots/*.png and the JSON of every stage. Stages whose outputs exist are skipped (--force redoes them).

Modes: the default is sized for one GPU (paper sizes, 5 seeds); --quick for a 2-core CPU in under 15 minutes;
--tiny for a smoke test (a minute or two). The report lists exactly what a reduced mode changed.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from pna import analysis
from pna.evaluate import Evaluation
from pna.generate import answer_correct, free_generation
from pna.paper import paper_number
from pna.report import NOT_RUN, Estimate, MarkdownReport
from pna.sweep import SweepResult, TrainJob, load_evaluation, run_jobs, run_sweep
from pna.tasks import make_split
from pna.train import TINY_MODEL, load_checkpoint
from pna.transfer import run_transfer

# (row key, label) of the report's first table, in order; keys match pna.paper.
FIRST_TABLE_ROWS: tuple[tuple[str, str], ...] = (
    ("ssm_r", "SSM r (parity)"),
    ("transformer_r", "Transformer r (parity)"),
    ("lag_tau", "Lag tau (SSM parity, threshold lag)"),
    ("sorting_r", "Sorting r (SSM)"),
    ("transfer_zero_shot_ssm", "Transfer halt F1 zero-shot, SSM (%)"),
    ("transfer_zero_shot_transformer", "Transfer halt F1 zero-shot, Transformer (%)"),
    ("transfer_adapted_ssm", "Transfer halt F1 adapted, SSM (%)"),
    ("transfer_adapted_transformer", "Transfer halt F1 adapted, Transformer (%)"),
    ("free_generation_accuracy", "Free-generation answer accuracy, SSM parity (%)"),
    ("teacher_forced_accuracy", "Teacher-forced answer accuracy, SSM parity (%)"),
)
MAIN_RUNS: tuple[tuple[str, str], ...] = (("parity", "ssm"), ("parity", "transformer"), ("sorting", "ssm"))
ARCHS = ("ssm", "transformer")
STAGE_FOLDERS = ("runs", "analysis", "generation", "transfer", "sweep", "plots")
PARITY_MAX_LEN = 64
OOD_BITS = (9, 10)


@dataclass(frozen=True)
class Protocol:
    """How one side of the comparison trains and scores: loss mode, SSM variant, number of seeds, F1 counting."""

    name: str
    loss_mode: str
    ssm_variant: str
    n_seeds: int
    f1_over_pad: bool
    description: str

    def variant(self, arch: str) -> str:
        """The architecture variant this protocol trains for arch."""
        return self.ssm_variant if arch == "ssm" else "default"

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds it trains with."""
        return tuple(range(self.n_seeds))


@dataclass(frozen=True)
class Profile:
    """Sizes of one mode. train: TrainConfig overrides for every run (per arch); n_test: test examples per run;
    n_free / n_free_ood: free-generation examples in-distribution / OOD; transfer: run_transfer keyword
    arguments; transfer_seeds: how many of each protocol's seeds are transferred; sweep_*: the sweep grid;
    workers: default number of training processes; reductions: what this mode changes relative to the full run."""

    name: str
    corrected_seeds: int
    train: dict[str, dict[str, Any]]
    n_test: int | None
    n_free: int
    n_free_ood: int
    transfer: dict[str, Any]
    transfer_seeds: int
    sweep_alphas: tuple[float, ...]
    sweep_betas: tuple[float, ...]
    sweep_seeds: tuple[int, ...]
    workers: int = 1
    reductions: tuple[str, ...] = field(default_factory=tuple)


FULL = Profile(
    name="full", corrected_seeds=5, train={"ssm": {}, "transformer": {}}, n_test=None, n_free=400, n_free_ood=100,
    transfer={"max_epochs": 20, "patience": 5}, transfer_seeds=5,
    sweep_alphas=(0.0, 0.01, 0.05, 0.1, 0.2, 0.5), sweep_betas=(0.0, 0.05, 0.1, 0.2, 0.4), sweep_seeds=(0, 1, 2),
)
QUICK = Profile(
    name="quick", corrected_seeds=2,
    train={arch: {"n_train": 1500, "n_val": 200, "max_epochs": 3, "patience": 2, "lr": 3e-3, "warmup_steps": 20,
                  "tiny": True, "quiet": True} for arch in ARCHS},
    n_test=200, n_free=100, n_free_ood=40,
    transfer={"n_train": 500, "n_val": 100, "n_test": 200, "max_epochs": 3, "patience": 2}, transfer_seeds=1,
    sweep_alphas=(0.0, 0.5), sweep_betas=(0.0, 0.4), sweep_seeds=(0,), workers=2,
    reductions=(
        "tiny models (the trainer's --tiny sizes: " + "; ".join(f"{arch} {sizes}" for arch, sizes in TINY_MODEL.items())
        + ") instead of the paper's ~5M parameters",
        "1500 training / 200 validation examples per run instead of 8000 / 1000; at most 3 epochs, patience 2; "
        "lr 3e-3 with 20 warmup steps instead of 3e-4 with 100 (short runs of small models)",
        "200 test examples per run instead of 1000",
        "corrected protocol: 2 seeds instead of 5",
        "free generation: 100 in-distribution + 40 OOD examples instead of 400 + 100",
        "transfer: 500 / 100 / 200 arithmetic train / val / test examples, at most 3 epochs, patience 2, "
        "first seed only",
        "sweep: alpha {0, 0.5} x beta {0, 0.4}, 1 seed instead of the 6 x 5 grid with 3 seeds",
    ),
)
TINY = Profile(
    name="tiny", corrected_seeds=2,
    train={arch: {"n_train": 64, "n_val": 16, "max_epochs": 1, "patience": 1, "lr": 3e-3, "warmup_steps": 2,
                  "tiny": True, "quiet": True} for arch in ARCHS},
    n_test=24, n_free=6, n_free_ood=4,
    transfer={"n_train": 32, "n_val": 8, "n_test": 16, "max_epochs": 1, "patience": 1}, transfer_seeds=1,
    sweep_alphas=(0.0, 0.5), sweep_betas=(0.1,), sweep_seeds=(0,),
    reductions=(
        "smoke-test mode: tiny models, 64 training / 16 validation examples, 1 epoch; the numbers are "
        "meaningless, only the report's structure is exercised",
        "24 test examples per run; corrected protocol: 2 seeds",
        "free generation: 6 in-distribution + 4 OOD examples",
        "transfer: 32 / 8 / 16 arithmetic examples, 1 epoch, first seed only",
        "sweep: alpha {0, 0.5} x beta {0.1}, 1 seed",
    ),
)


def protocols(profile: Profile) -> tuple[Protocol, Protocol]:
    """The faithful and the corrected protocol under a profile."""
    return (
        Protocol("faithful", "faithful", "faithful", 1, True,
                 "original loss (energy term without gradient), original SSM architecture, one run, "
                 "halt F1 counted over PAD positions"),
        Protocol("corrected", "corrected", "default", profile.corrected_seeds, False,
                 "differentiable energy term (expected compute), default SSM, "
                 f"{profile.corrected_seeds} seeds, halt F1 over positions before EOS"),
    )


def run_name(protocol: Protocol, task: str, arch: str, seed: int) -> str:
    """Folder name of one main training run."""
    return f"{protocol.name}_{task}_{arch}_s{seed}"


def main_jobs(profile: Profile, alpha: float, beta: float) -> list[TrainJob]:
    """Every main training run: both protocols x MAIN_RUNS x the protocol's seeds."""
    return [
        TrainJob(name=run_name(p, task, arch, seed), task=task, arch=arch, variant=p.variant(arch),
                 loss_mode=p.loss_mode, alpha=alpha, beta=beta, seed=seed, train_overrides=profile.train[arch],
                 n_test=profile.n_test)
        for p in protocols(profile) for task, arch in MAIN_RUNS for seed in p.seeds
    ]


def _cached(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A stage's JSON output: read back if it exists, else computed and written (--force deletes them first)."""
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    data = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default), encoding="utf-8")
    tmp.replace(path)
    return data


def _json_default(value: Any) -> Any:
    """JSON for numpy scalars and arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _pooled(evaluations: Sequence[Evaluation]) -> Evaluation:
    """One Evaluation holding the examples of several (same task and length)."""
    return Evaluation(**{name: np.concatenate([getattr(e, name) for e in evaluations])
                         for name in Evaluation.__dataclass_fields__})


def analyse_group(evaluations: Sequence[Evaluation]) -> dict[str, Any]:
    """Coupling, lag, cross-correlation, halting and teacher-forced accuracy of one group of runs (one per seed).

    Examples of every seed are pooled for the summaries; per_seed_r keeps each seed's own mean r.
    """
    ev = _pooled(evaluations)
    series = (ev.entropy, ev.halt_logits, ev.result_pos, ev.lengths)
    per_seed = [analysis.coupling(e.entropy, e.halt_logits, e.result_pos, e.lengths).summary.mean
                for e in evaluations]
    return {
        "n_seeds": len(evaluations),
        "coupling": analysis.coupling(*series).to_dict(),
        "per_seed_r": [None if math.isnan(r) else r for r in per_seed],
        "lag": analysis.threshold_lag(*series).to_dict(),
        "xcorr": analysis.cross_correlation(*series).to_dict(),
        "xcorr_differenced": analysis.cross_correlation(*series, differenced=True).to_dict(),
        "halting": analysis.halting_metrics(ev.halt_logits, ev.halt_labels, ev.halt_mask, ev.result_pos).to_dict(),
        "teacher_forced": {"answer_accuracy": ev.answer_accuracy,
                           "answer_ci": list(analysis.bootstrap_ci(ev.answer_correct.astype(float))),
                           "token_accuracy": ev.token_accuracy, "n": ev.n},
    }


def generation_stage(checkpoints: Sequence[str], profile: Profile, device: str) -> dict[str, Any]:
    """Free generation of every checkpoint (one per seed) on in-distribution and OOD parity, pooled over seeds."""
    in_dist = make_split("parity", "test", n=profile.n_free)
    ood = make_split("parity", "test", n=profile.n_free_ood, min_bits=OOD_BITS[0], max_bits=OOD_BITS[1])
    ood_len = max(len(ex.ids) for ex in ood) + 1
    result: dict[str, Any] = {"ood_max_len": ood_len}
    for split, examples, max_len in (("in_dist", in_dist, PARITY_MAX_LEN), ("ood", ood, ood_len)):
        correct: list[float] = []
        summaries = []
        for path in checkpoints:
            model, _ = load_checkpoint(path, device)
            summary, gens = free_generation(model, examples, max_len=max_len, device=device)
            summaries.append(summary.to_dict())
            correct += [float(ok) for ok in answer_correct(gens, examples)]
        result[split] = {"accuracy": float(np.mean(correct)), "ci": list(analysis.bootstrap_ci(np.array(correct))),
                         "n": len(correct), "per_seed": summaries}
    return result


def _num(value: float | None) -> float:
    """A JSON number back to float (None, written for NaN, becomes NaN)."""
    return math.nan if value is None else float(value)


def _summary_estimate(summary: dict[str, Any], detail: str = "", **kwargs: Any) -> Estimate:
    """A cell from a pna.analysis Summary dict (mean, ci_low, ci_high, n)."""
    ci = (_num(summary["ci_low"]), _num(summary["ci_high"]))
    return Estimate(_num(summary["mean"]), None if math.isnan(ci[0]) else ci, summary["n"], detail, **kwargs)


def _r_estimate(group: dict[str, Any] | None) -> Estimate:
    """The mean-r cell of a group (pooled over seeds, with its bootstrap CI and n)."""
    if group is None:
        return Estimate(None)
    seeds = group["n_seeds"]
    detail = f"{seeds} seed"
    if seeds > 1:
        detail += "s; per-seed means " + ", ".join(f"{_num(r):.3f}" for r in group["per_seed_r"])
    return _summary_estimate(group["coupling"], detail)


def first_table_cells(
    protocol: Protocol, groups: dict[str, dict[str, Any]], generation: dict[str, dict[str, Any]],
    transfer: dict[str, list[dict[str, Any]]],
) -> dict[str, Estimate]:
    """One protocol's column of the first table, keyed like FIRST_TABLE_ROWS."""
    ssm, tf, sorting = (groups.get(f"{protocol.name}_{t}_{a}") for t, a in MAIN_RUNS)
    cells = {"ssm_r": _r_estimate(ssm), "transformer_r": _r_estimate(tf), "sorting_r": _r_estimate(sorting)}
    if ssm is not None:
        lag = ssm["lag"]
        cells["lag_tau"] = _summary_estimate(lag, f"{lag['n_censored']} censored; tau < 0: entropy collapses first")
        tf_acc = ssm["teacher_forced"]
        cells["teacher_forced_accuracy"] = Estimate(tf_acc["answer_accuracy"], tuple(tf_acc["answer_ci"]),
                                                    tf_acc["n"], scale=100, digits=1)
    gen = generation.get(f"{protocol.name}_ssm")
    if gen is not None:
        cells["free_generation_accuracy"] = Estimate(gen["in_dist"]["accuracy"], tuple(gen["in_dist"]["ci"]),
                                                     gen["in_dist"]["n"], "in-distribution", scale=100, digits=1)
    key = "f1_with_pad" if protocol.f1_over_pad else "f1"
    for arch in ARCHS:
        runs = transfer.get(f"{protocol.name}_{arch}")
        if not runs:
            continue
        for stage in ("zero_shot", "adapted"):
            # one run: its bootstrap CI over examples; several: the mean over runs with the runs' range
            values = [_num(r[stage][key]) for r in runs]
            ci = tuple(runs[0][stage][key + "_ci"]) if len(runs) == 1 else (min(values), max(values))
            detail = f"{'F1 over PAD' if protocol.f1_over_pad else 'F1 before EOS'}; " + (
                "1 run" if len(runs) == 1 else f"mean of {len(runs)} runs, brackets: their range; n summed over runs")
            cells[f"transfer_{stage}_{arch}"] = Estimate(
                float(np.mean(values)), ci, sum(r["n_test"] for r in runs), detail, scale=100, digits=1)
    return {key: cells.get(key, Estimate(None)) for key, _ in FIRST_TABLE_ROWS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `pna reproduce`."""
    parser.add_argument("--out", default="runs/reproduce", help="output folder (default runs/reproduce)")
    parser.add_argument("--quick", action="store_true", help="reduced run for a 2-core CPU (< 15 minutes)")
    parser.add_argument("--tiny", action="store_true", help="smoke test: tiny models, a few steps (wins over --quick)")
    parser.add_argument("--force", action="store_true", help="redo every stage even if its outputs exist")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel training processes (default: 2 with --quick, else 1)")
    parser.add_argument("--alpha", type=float, default=0.05, help="energy weight of the main runs (default 0.05)")
    parser.add_argument("--beta", type=float, default=0.1, help="halt-BCE weight of the main runs (default 0.1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-sweep", action="store_true", help="leave the alpha x beta sweep out")


def run(args: argparse.Namespace) -> int:
    """`pna reproduce`: every stage, then report.md; returns 0."""
    profile = TINY if args.tiny else QUICK if args.quick else FULL
    workers = profile.workers if args.workers is None else args.workers
    if workers < 1:
        raise SystemExit("pna reproduce: error: --workers must be >= 1")
    for name in ("alpha", "beta"):
        value = getattr(args, name)
        if not math.isfinite(value) or value < 0:
            raise SystemExit(f"pna reproduce: error: --{name} must be a finite number >= 0, got {value}")
    out = Path(args.out)
    if args.force and out.exists():
        for sub in STAGE_FOLDERS:
            shutil.rmtree(out / sub, ignore_errors=True)
    profile = Profile(**{**profile.__dict__, "train": {
        arch: {**profile.train[arch], "device": args.device} for arch in ARCHS}})
    protos = protocols(profile)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = now - clock
        clock = now

    jobs = main_jobs(profile, args.alpha, args.beta)
    results = {r["job"]["name"]: r for r in run_jobs(jobs, out / "runs", workers=workers, desc="main runs")}
    lap("main training runs + test evaluation")

    groups: dict[str, dict[str, Any]] = {}
    for p in tqdm(protos, desc="analysis"):
        for task, arch in MAIN_RUNS:
            key = f"{p.name}_{task}_{arch}"
            group_jobs = [j for j in jobs if j.name.startswith(key + "_s")]
            groups[key] = _cached(out / "analysis" / f"{key}.json",
                                  lambda js=group_jobs: analyse_group([load_evaluation(out / "runs", j) for j in js]))
    lap("analysis")

    generation: dict[str, dict[str, Any]] = {}
    for p in tqdm(protos, desc="free generation"):
        for arch in ARCHS:
            ckpts = [results[run_name(p, "parity", arch, s)]["checkpoint"] for s in p.seeds]
            generation[f"{p.name}_{arch}"] = _cached(out / "generation" / f"{p.name}_{arch}.json",
                                                      lambda c=ckpts: generation_stage(c, profile, args.device))
    lap("free generation")

    transfer: dict[str, list[dict[str, Any]]] = {}
    for p in tqdm(protos, desc="transfer"):
        for arch in ARCHS:
            transfer[f"{p.name}_{arch}"] = [
                _cached(out / "transfer" / f"{p.name}_{arch}_s{s}.json",
                        lambda c=results[run_name(p, "parity", arch, s)]["checkpoint"], s=s: run_transfer(
                            c, seed=s, device=args.device, **profile.transfer).to_dict())
                for s in p.seeds[: profile.transfer_seeds]
            ]
    lap("transfer")

    sweep = None
    if not args.skip_sweep:
        sweep = run_sweep(out / "sweep", profile.sweep_alphas, profile.sweep_betas, profile.sweep_seeds,
                          workers=workers, train_overrides=profile.train["ssm"], n_test=profile.n_test)
    lap("sweep")

    plots = _plots(out / "plots", protos, jobs)
    lap("plots")
    report = build_report(profile, protos, args, groups, generation, transfer, sweep, plots, results, timings)
    path = report.write(out / "report.md")
    print(f"report: {path}")
    return 0


def _plots(folder: Path, protos: Sequence[Protocol], jobs: Sequence[TrainJob]) -> dict[str, str]:
    """The figures of SSM parity per protocol (seeds pooled): curves around rp, cross-correlation, r histogram."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    for p in protos:
        key = f"{p.name}_parity_ssm"
        ev = _pooled([load_evaluation(folder.parent / "runs", j) for j in jobs if j.name.startswith(key + "_s")])
        series = (ev.entropy, ev.halt_logits, ev.result_pos, ev.lengths)
        title = f"SSM parity, {p.name} protocol"
        paths[f"curves_{p.name}"] = str(analysis.plot_aligned_curves(*series, folder / f"curves_{p.name}.png",
                                                                     title=title))
        xcorr = analysis.cross_correlation(*series)
        paths[f"xcorr_{p.name}"] = str(analysis.plot_cross_correlation(
            xcorr.lags, xcorr.c, folder / f"xcorr_{p.name}.png",
            c_differenced=analysis.cross_correlation(*series, differenced=True).c, title=title))
        r = analysis.coupling(*series).r
        if r.size:
            paths[f"r_hist_{p.name}"] = str(analysis.plot_r_histogram(r, folder / f"r_hist_{p.name}.png",
                                                                      title=title))
    return paths


def build_report(
    profile: Profile, protos: Sequence[Protocol], args: argparse.Namespace, groups: dict[str, dict[str, Any]],
    generation: dict[str, dict[str, Any]], transfer: dict[str, list[dict[str, Any]]], sweep: SweepResult | None,
    plots: dict[str, str], results: dict[str, dict[str, Any]], timings: dict[str, float],
) -> MarkdownReport:
    """The Markdown report: the side-by-side table first, then details, sweep, figures and the runs."""
    report = MarkdownReport("Architectural proprioception: paper vs. faithful reproduction vs. corrected protocol")
    report.paragraph(
        f"Mode: **{profile.name}**; main runs with alpha = {args.alpha}, beta = {args.beta}; device {args.device}; "
        f"this invocation took {sum(timings.values()) / 60:.1f} min (stages found finished on disk were read back, "
        "not rerun; see 'Timings'). Every number "
        "below except the 'Paper' column was measured by this run; brackets are 95% bootstrap CIs over examples, "
        "n counts examples (pooled over seeds).")
    cells = {p.name: first_table_cells(p, groups, generation, transfer) for p in protos}
    rows = [[label, paper_number(key).text, cells["faithful"][key].format(), cells["corrected"][key].format()]
            for key, label in FIRST_TABLE_ROWS]
    report.table(["Quantity", "Paper", "Faithful reproduction", "Corrected protocol"], rows)
    report.heading("Protocols")
    report.bullets([f"**{p.name}**: {p.description}" for p in protos])
    report.heading("What the paper's numbers measured")
    report.bullets([f"**{label}**: {paper_number(key).note}" for key, label in FIRST_TABLE_ROWS])
    if profile.reductions:
        report.heading(f"What the {profile.name} mode reduced")
        report.bullets(list(profile.reductions))
    _details(report, protos, groups, generation, transfer)
    report.heading("Sweep (corrected protocol, SSM parity)")
    if sweep is None:
        report.paragraph(NOT_RUN + " (--skip-sweep)")
    else:
        header = ["alpha \\ beta"] + [f"{b:g}" for b in sweep.betas]
        report.table(header, [[f"{a:g}"] + [f"r {sweep.mean_r[i, j]:.3f}, acc {sweep.accuracy[i, j]:.2f}"
                                            for j in range(len(sweep.betas))] for i, a in enumerate(sweep.alphas)])
        report.paragraph(f"Each cell: mean over {len(sweep.seeds)} seed(s) of the per-seed mean r, and of the "
                         "teacher-forced answer accuracy.")
        for path in sweep.heatmaps:
            report.image(str(Path(path).relative_to(Path(args.out))), Path(path).stem)
    report.heading("Figures")
    for name, path in plots.items():
        report.image(str(Path(path).relative_to(Path(args.out))), name)
    report.heading("Timings (this invocation)")
    report.table(["stage", "seconds"], [[stage, f"{seconds:.1f}"] for stage, seconds in timings.items()])
    report.heading("Runs")
    report.table(["run", "token acc", "answer acc", "mean r", "checkpoint"], [
        [name, f"{r['token_accuracy']:.3f}", f"{r['answer_accuracy']:.3f}", Estimate(r["coupling"]["mean"]).format(),
         str(Path(r["checkpoint"]).relative_to(Path(args.out)))] for name, r in sorted(results.items())])
    return report


def _fmt(value: float | None, spec: str) -> str:
    """A JSON number formatted, or "n/a" where it was undefined (None)."""
    return "n/a" if value is None else format(value, spec)


def _details(report: MarkdownReport, protos: Sequence[Protocol], groups: dict[str, dict[str, Any]],
             generation: dict[str, dict[str, Any]], transfer: dict[str, list[dict[str, Any]]]) -> None:
    """Second-level tables: coupling statistics, halting metrics, free generation, transfer."""
    report.heading("Coupling and lag (teacher forced, test split, seeds pooled)")
    rows = []
    for key, g in groups.items():
        c, lag, x, xd = g["coupling"], g["lag"], g["xcorr"], g["xcorr_differenced"]
        rows.append([key, c["n"], c["n_short"] + c["n_constant"], _fmt(c["median"], ".3f"), _fmt(c["std"], ".3f"),
                     _fmt(c["fraction_negative"], ".2f"), _fmt(c["p_fisher_t"], ".2g"), _fmt(c["p_wilcoxon"], ".2g"),
                     _summary_estimate(lag, f"{lag['n_censored']} censored").format(),
                     f"{x['lag_argmin']} / {xd['lag_argmin']}"])
    report.table(["group", "n", "excluded (rp < 5 or constant)", "median r", "sd r", "frac r<0", "Fisher-z t p",
                  "Wilcoxon p", "threshold lag tau", "xcorr argmin lag (levels / differences)"], rows)
    if groups:
        first = next(iter(groups.values()))
        report.paragraph(f"Sign conventions: {first['lag']['sign_convention']}; {first['xcorr']['sign_convention']}.")
    report.heading("Halting (teacher forced)")
    report.table(["group", "F1 before EOS", "F1 over PAD (original)", "AUROC", "mean stop error", "early", "exact",
                  "late", "never"], [
        [key, _fmt(h["f1"], ".3f"), _fmt(h["f1_with_pad"], ".3f"), _fmt(h["auroc"], ".3f"),
         _fmt(h["mean_stop_error"], ".2f"), f"{h['early_rate']:.2f}", f"{h['exact_rate']:.2f}",
         f"{h['late_rate']:.2f}", f"{h['never_rate']:.2f}"]
        for key, g in groups.items() for h in [g["halting"]]])
    report.heading("Free generation (parity, greedy, stop on HALT, EOS or q > 0.95)")
    rows = []
    for key, gen in generation.items():
        for split in ("in_dist", "ood"):
            s = gen[split]
            per_seed = s["per_seed"]
            reasons = {r: sum(x["stop_reasons"][r] for x in per_seed) for r in per_seed[0]["stop_reasons"]}
            rows.append([key, split, Estimate(s["accuracy"], tuple(s["ci"]), s["n"], scale=100, digits=1).format(),
                         f"{np.mean([x['halt_accuracy'] for x in per_seed]):.2f}",
                         f"{np.mean([x['tokens_saved'] for x in per_seed]):.1f}",
                         f"{np.mean([x['tokens_saved_fraction'] for x in per_seed]):.2f}",
                         ", ".join(f"{r} {n}" for r, n in reasons.items())])
    report.table(["model", "split", "answer accuracy (%)", "halt accuracy", "tokens saved", "budget saved",
                  "stop reasons"], rows)
    if generation:
        ood_len = next(iter(generation.values()))["ood_max_len"]
        report.paragraph(f"OOD: parity with {OOD_BITS[0]}-{OOD_BITS[1]} bits, decoded up to {ood_len} tokens (the "
                         f"in-distribution budget is {PARITY_MAX_LEN}). Halt accuracy: stopped on its own halt signal "
                         "after writing 'Result:'. Tokens saved: max length minus length at stop.")
    report.heading("Transfer to arithmetic chains (halt head frozen, CE-only fine-tuning)")
    rows = []
    for key, runs in transfer.items():
        for seed, r in enumerate(runs):
            z, a = r["zero_shot"], r["adapted"]
            rows.append([key, seed, _fmt(z["f1"], ".3f"), _fmt(z["f1_with_pad"], ".3f"), _fmt(a["f1"], ".3f"),
                         _fmt(a["f1_with_pad"], ".3f"), r["best_epoch"], len(r["history"]), r["n_test"]])
    report.table(["model", "seed", "zero-shot F1 (before EOS)", "zero-shot F1 (over PAD)", "adapted F1 (before EOS)",
                  "adapted F1 (over PAD)", "best epoch", "epochs run", "n test"], rows)
