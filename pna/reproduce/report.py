"""The content of `pna reproduce`'s report.md: the side-by-side table, the details, the sweep, the figures
and the runs. Everything here is a function of the stages' JSON outputs, so a resumed invocation writes the
same bytes as an uninterrupted one (timings go to timings.json, not into the report)."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from pna.paper import paper_number
from pna.report import NOT_RUN, Estimate, MarkdownReport
from pna.sweep import SweepResult

from .profiles import ARCHS, MAIN_RUNS, Profile, Protocol
from .stages import OOD_BITS, PARITY_MAX_LEN

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


def _num(value: float | None) -> float:
    """A JSON number back to float (None, written for NaN, becomes NaN)."""
    return math.nan if value is None else float(value)


def _summary_estimate(summary: dict[str, Any], detail: str = "", **kwargs: Any) -> Estimate:
    """A cell from a pna.analysis Summary dict (mean, ci_low, ci_high, n)."""
    ci = (_num(summary["ci_low"]), _num(summary["ci_high"]))
    return Estimate(_num(summary["mean"]), None if math.isnan(ci[0]) else ci, summary["n"], detail, **kwargs)


def _r_estimate(group: dict[str, Any] | None, excluded: int = 0) -> Estimate:
    """The mean-r cell of a group (pooled over seeds, with its bootstrap CI and n); excluded: runs of the group
    left out because they did not learn their task."""
    left_out = f"{excluded} run{'s' if excluded > 1 else ''} did not learn, left out" if excluded else ""
    if group is None:
        return Estimate(None, missing=f"no run learned its task ({left_out})") if excluded else Estimate(None)
    seeds = group["n_seeds"]
    detail = f"{seeds} seed"
    if seeds > 1:
        detail += "s; per-seed means " + ", ".join(f"{_num(r):.3f}" for r in group["per_seed_r"])
    return _summary_estimate(group["coupling"], "; ".join(filter(None, [detail, left_out])))


def first_table_cells(
    protocol: Protocol, groups: dict[str, dict[str, Any]], generation: dict[str, dict[str, Any]],
    transfer: dict[str, list[dict[str, Any]]], excluded: dict[str, int] | None = None,
) -> dict[str, Estimate]:
    """One protocol's column of the first table, keyed like FIRST_TABLE_ROWS; excluded: group -> runs left out
    because they did not learn (their count is shown in the r cells)."""
    names = [f"{protocol.name}_{t}_{a}" for t, a in MAIN_RUNS]
    ssm, tf, sorting = (groups.get(name) for name in names)
    left_out = [(excluded or {}).get(name, 0) for name in names]
    cells = {row: _r_estimate(group, n) for row, group, n in
             zip(("ssm_r", "transformer_r", "sorting_r"), (ssm, tf, sorting), left_out)}
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


def build_report(
    profile: Profile, protos: Sequence[Protocol], settings: dict[str, Any], groups: dict[str, dict[str, Any]],
    generation: dict[str, dict[str, Any]], transfer: dict[str, list[dict[str, Any]]], sweep: SweepResult | None,
    plots: dict[str, str], runs: dict[str, dict[str, Any]], excluded: dict[str, int] | None = None,
) -> MarkdownReport:
    """The Markdown report: the side-by-side table first, then details, sweep, figures and the runs.

    settings: alpha, beta, device and skip_sweep of the invocation; plots and sweep heatmaps: paths relative to
    the output root; runs: label -> the main job's result plus "run_dir" (relative to the output root) and, where
    marked (pna.reproduce.learning.mark_runs), "free_generation" and "verdict"; excluded: group -> runs left out
    of the headline cells because they did not learn.
    """
    report = MarkdownReport("Architectural proprioception: paper vs. faithful reproduction vs. corrected protocol")
    report.paragraph(
        f"Mode: **{profile.name}**; main runs with alpha = {settings['alpha']}, beta = {settings['beta']}; device "
        f"{settings['device']}. Every number below except the 'Paper' column was measured by the runs listed "
        "under 'Runs' (each folder name ends with the hash of the run's whole config); brackets are 95% bootstrap "
        "CIs over examples, n counts examples (pooled over seeds). Stage timings are in timings.json.")
    cells = {p.name: first_table_cells(p, groups, generation, transfer, excluded) for p in protos}
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
        report.paragraph(NOT_RUN + " (--skip-sweep, or this mode dropped it: see above)")
    else:
        header = ["alpha \\ beta"] + [f"{b:g}" for b in sweep.betas]
        report.table(header, [[f"{a:g}"] + [f"r {sweep.mean_r[i, j]:.3f}, acc {sweep.accuracy[i, j]:.2f}"
                                            for j in range(len(sweep.betas))] for i, a in enumerate(sweep.alphas)])
        report.paragraph(f"Each cell: mean over {len(sweep.seeds)} seed(s) of the per-seed mean r, and of the "
                         "teacher-forced answer accuracy.")
        for path in sweep.heatmaps:
            report.image(f"sweep/{path}", path.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    report.heading("Figures")
    for name, path in sorted(plots.items()):
        report.image(path, name)
    _runs_table(report, runs, excluded or {})
    return report


def _runs_table(report: MarkdownReport, runs: dict[str, dict[str, Any]], excluded: dict[str, int]) -> None:
    """The runs table: teacher-forced trace and answer accuracy, free generation where measured, and whether the
    run learned its task (pna.reproduce.learning thresholds)."""
    report.heading("Runs")
    n_failed = sum(1 for r in runs.values() if r.get("verdict"))
    left_out = sum(excluded.values())
    report.paragraph(
        f"{len(runs) - n_failed} of {len(runs)} main runs learned their task (parity: trace acc >= 0.99 and "
        "free-generation answer accuracy >= 0.90 in-distribution; sorting: trace acc >= 0.95); "
        f"{left_out} run(s) that did not were left out of the headline cells. Trace acc: teacher-forced accuracy "
        "over the tokens the input determines (trace, answer, HALT, EOS; not the random input tokens).")
    report.table(["run", "epochs", "trace acc", "answer acc", "free-gen acc", "token acc", "mean r", "learned",
                  "checkpoint"], [
        [name, r["epochs"], _fmt(r.get("trace_accuracy"), ".3f"), f"{r['answer_accuracy']:.3f}",
         _fmt(r.get("free_generation"), ".3f"), f"{r['token_accuracy']:.3f}", Estimate(r["coupling"]["mean"]).format(),
         r.get("verdict") or "yes", f"{r['run_dir']}/{r['checkpoint']}"]
        for name, r in sorted(runs.items())])


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
            reasons = {r: sum(x["stop_reasons"][r] for x in per_seed) for r in sorted(per_seed[0]["stop_reasons"])}
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
