"""The content of `pna reproduce`'s report.md: the side-by-side table, the details, the sweep, the figures
and the runs. Everything here is a function of the stages' JSON outputs, so a resumed invocation writes the
same bytes as an uninterrupted one (timings go to timings.json, not into the report)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from pna.analysis import seed_distribution
from pna.generate import ORIGINAL_MAX_NEW_TOKENS
from pna.paper import CONTEXT_KEYS, ORIGINAL_BETA_01_SPREAD, paper_number
from pna.report import NOT_RUN, Estimate, MarkdownReport
from pna.sweep import SweepResult

from .profiles import ARCHS, FAITHFUL_GROUPS, MAIN_RUNS, Profile, Protocol
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


def _left_out(excluded: int) -> str:
    """The note of a cell whose group lost `excluded` runs that did not learn their task ("" for none)."""
    return f"{excluded} run{'s' if excluded > 1 else ''} did not learn, left out" if excluded else ""


def _none_learned(excluded: int) -> Estimate:
    """The cell of a group none of whose runs were kept: why (no run learned) or, with nothing excluded, not run."""
    return Estimate(None, missing=f"no run learned its task ({_left_out(excluded)})") if excluded else Estimate(None)


def _r_estimate(group: dict[str, Any] | None, excluded: int = 0) -> Estimate:
    """The mean-r cell of a group (pooled over seeds, with its bootstrap CI and n); excluded: runs of the group
    left out because they did not learn their task."""
    left_out = _left_out(excluded)
    if group is None:
        return _none_learned(excluded)
    seeds = group["n_seeds"]
    detail = f"{seeds} seed"
    if seeds > 1:
        detail += "s; per-seed means " + ", ".join(f"{_num(r):.3f}" for r in group["per_seed_r"])
    return _summary_estimate(group["coupling"], "; ".join(filter(None, [detail, left_out])))


@dataclass(frozen=True)
class ReportInputs:
    """The stages' JSON outputs the report is made of.

    groups: "corrected_<task>_<arch>" and "faithful_<group>" -> stages.analyse_group (the corrected statistics);
    faithful: "E_ssm" / "E_sort" -> stages.faithful_cell, "A" -> stages.phase8_stage; side_by_side:
    stages.side_by_side_stage of the corrected SSM parity runs; generation: "corrected_<arch>" ->
    stages.generation_stage, "faithful_<group>" -> stages.faithful_generation_stage; transfer: "<protocol>_<arch>"
    -> transfer job results; sweep: None with --skip-sweep; plots: name -> path relative to the output root;
    runs: label -> the main job's result plus "run_dir" (relative to the output root) and, where marked
    (pna.reproduce.learning.mark_runs), "free_generation" and "verdict"; excluded: group ("corrected_<task>_<arch>"
    or "faithful_<group>") -> its runs left out of the headline cells because they did not learn."""

    groups: dict[str, dict[str, Any]]
    faithful: dict[str, dict[str, Any]]
    side_by_side: dict[str, Any]
    generation: dict[str, dict[str, Any]]
    transfer: dict[str, list[dict[str, Any]]]
    sweep: SweepResult | None
    plots: dict[str, str]
    runs: dict[str, dict[str, Any]]
    excluded: dict[str, int] = field(default_factory=dict)


def _transfer_cells(protocol: Protocol, transfer: dict[str, list[dict[str, Any]]]) -> dict[str, Estimate]:
    """The four transfer rows of one protocol: the mean F1 over its runs per architecture (the faithful protocol:
    the original's F1 over PAD, averaged over two models as the original did)."""
    cells = {}
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
                "1 run" if len(runs) == 1 else f"mean of {len(runs)} models, brackets: their range; n per model")
            cells[f"transfer_{stage}_{arch}"] = Estimate(
                float(np.mean(values)), ci, runs[0]["n_test"], detail, scale=100, digits=1)
    return cells


def corrected_cells(protocol: Protocol, inputs: ReportInputs) -> dict[str, Estimate]:
    """The corrected protocol's column of the first table, keyed like FIRST_TABLE_ROWS."""
    names = [f"{protocol.name}_{t}_{a}" for t, a in MAIN_RUNS]
    ssm, tf, sorting = (inputs.groups.get(name) for name in names)
    cells = {row: _r_estimate(group, inputs.excluded.get(name, 0))
             for row, group, name in zip(("ssm_r", "transformer_r", "sorting_r"), (ssm, tf, sorting), names)}
    if ssm is None:
        cells["lag_tau"] = cells["teacher_forced_accuracy"] = _none_learned(inputs.excluded.get(names[0], 0))
    else:
        lag = ssm["lag"]
        cells["lag_tau"] = _summary_estimate(lag, f"{lag['n_censored']} censored; tau < 0: the halt signal leads")
        tf_acc = ssm["teacher_forced"]
        cells["teacher_forced_accuracy"] = Estimate(tf_acc["answer_accuracy"], tuple(tf_acc["answer_ci"]),
                                                    tf_acc["n"], "whole answer", scale=100, digits=1)
    gen = inputs.generation.get(f"{protocol.name}_ssm")
    if gen is not None:
        cells["free_generation_accuracy"] = Estimate(gen["in_dist"]["accuracy"], tuple(gen["in_dist"]["ci"]),
                                                     gen["in_dist"]["n"], "in-distribution, strict parse",
                                                     scale=100, digits=1)
    cells.update(_transfer_cells(protocol, inputs.transfer))
    return {key: cells.get(key, Estimate(None)) for key, _ in FIRST_TABLE_ROWS}


def _default_counts(cell: dict[str, Any]) -> tuple[int, int, int]:
    """(examples with sc = L, with hr = L, examples) summed over the seeds of a stages.faithful_cell."""
    seeds = cell["per_seed"]
    return (sum(s["tau"]["n_sc_default"] for s in seeds), sum(s["tau"]["n_hr_default"] for s in seeds),
            sum(s["n"] for s in seeds))


def _seed_estimate(dist: dict[str, Any] | None, n: int, note: str = "") -> Estimate:
    """A cell of the headline cell E_ssm from a seed distribution: its mean, brackets min..max over the seeds, n
    examples per seed, then note."""
    extra = f"; {note}" if note else ""
    if dist is None:
        return Estimate(math.nan, None, n, f"E_ssm: undefined in every seed{extra}")
    sd = "" if dist["sd"] is None else f", sd {dist['sd']:.3f}"
    return Estimate(dist["mean"], (dist["min"], dist["max"]), n,
                    f"E_ssm, mean of {dist['n']} seeds, brackets: their min..max{sd}; n per seed{extra}")


def faithful_cells(protocol: Protocol, inputs: ReportInputs) -> dict[str, Estimate]:
    """The faithful protocol's column of the first table, every cell computed with the original's definitions
    (see ReportInputs and pna.paper's notes), keyed like FIRST_TABLE_ROWS."""
    cells: dict[str, Estimate] = {}
    out = {name: inputs.excluded.get(f"faithful_{name}", 0) for name in ("E_ssm", "E_sort", "A")}
    head = inputs.faithful.get("E_ssm")
    if head is None:
        for key in ("ssm_r", "lag_tau", "teacher_forced_accuracy"):
            cells[key] = _none_learned(out["E_ssm"])
    else:
        first, left_out = head["per_seed"][0], _left_out(out["E_ssm"])
        cells["ssm_r"] = _seed_estimate(head["r"], first["n_analysed"], left_out)
        sc, hr, n = _default_counts(head)
        cells["lag_tau"] = _seed_estimate(head["tau"], first["n_analysed"], "; ".join(filter(None, [
            f"sc = L in {sc} of {n} examples, hr = L in {hr} (see the headline cell)", left_out])))
        acc = [s["first_answer_accuracy"] for s in head["per_seed"]]
        cells["teacher_forced_accuracy"] = Estimate(
            float(np.mean(acc)), (min(acc), max(acc)) if len(acc) > 1 else None, first["n_split"],
            "; ".join(filter(None, [f"first answer token at rp, mixed split; E_ssm, mean of {len(acc)} seeds, "
                                    "brackets: their min..max", left_out])), scale=100, digits=1)
    sort = inputs.faithful.get("E_sort")
    if sort is None:
        cells["sorting_r"] = _none_learned(out["E_sort"])
    else:
        r = sort["per_seed"][0]["r"]
        cells["sorting_r"] = Estimate(_num(r["mean"]), None, r["n_valid"], "E_sort, 1 seed")
    probe = inputs.faithful.get("A")
    if probe is None:
        cells["transformer_r"] = _none_learned(out["A"])
    else:
        cells["transformer_r"] = Estimate(
            _num(probe["mean"]), None, probe["n_valid"],
            f"Phase-8 probe statistic of the CE-only Transformer A, 1 seed; probe accuracy {probe['probe_accuracy']:.2f}")
    gen = inputs.generation.get("faithful_E_ssm")
    if gen is not None:
        pooled = gen["pooled"]
        cells["free_generation_accuracy"] = Estimate(
            pooled["accuracy"], tuple(pooled["ci"]), pooled["n"],
            f"E_ssm seed 0; pooled {gen['in_dist']['n']} in-distribution + {gen['ood']['n']} OOD, lenient parse",
            scale=100, digits=1)
    cells.update(_transfer_cells(protocol, inputs.transfer))
    return {key: cells.get(key, Estimate(None)) for key, _ in FIRST_TABLE_ROWS}


def dropped_cells(profile: Profile) -> dict[str, Estimate]:
    """The first-table cells of the stages the profile drops (the transfer rows when it drops "transfer"), saying
    so in both columns: no number from a model that did not run; the reason is in the mode's reductions."""
    if "transfer" not in profile.dropped:
        return {}
    dropped = Estimate(None, missing=f"dropped in {profile.name} mode (see 'What the {profile.name} mode reduced')")
    return {key: dropped for key, _ in FIRST_TABLE_ROWS if key.startswith("transfer_")}


def build_report(profile: Profile, protos: Sequence[Protocol], settings: dict[str, Any],
                 inputs: ReportInputs) -> MarkdownReport:
    """The Markdown report: the side-by-side table first, then the headline cell over seeds beside the original's
    spread, both definitions for the corrected models, the notes, details, sweep, figures and the runs.

    settings: alpha, beta and device of the invocation.
    """
    report = MarkdownReport("Architectural proprioception: paper vs. faithful reproduction vs. corrected protocol")
    report.paragraph(
        f"Mode: **{profile.name}**; device {settings['device']}. Faithful column: the original's groups, data, "
        "loss and definitions (see 'Protocols'); corrected column: main runs with alpha = "
        f"{settings['alpha']}, beta = {settings['beta']}. Every number below except the 'Paper' column was "
        "measured by the runs listed under 'Runs' (each folder name ends with the hash of the run's whole config); "
        "brackets are 95% bootstrap CIs over examples unless the cell says otherwise, n counts examples. Stage "
        "timings are in timings.json.")
    faithful, corrected = protos
    cells = {"faithful": faithful_cells(faithful, inputs), "corrected": corrected_cells(corrected, inputs)}
    for column in cells.values():
        column.update(dropped_cells(profile))
    rows = [[label, paper_number(key).text, cells["faithful"][key].format(), cells["corrected"][key].format()]
            for key, label in FIRST_TABLE_ROWS]
    report.table(["Quantity", "Paper", "Faithful reproduction", "Corrected protocol"], rows)
    _headline(report, inputs.faithful.get("E_ssm"), inputs.excluded.get("faithful_E_ssm", 0))
    _definitions(report, inputs.side_by_side)
    report.heading("Protocols")
    report.bullets([f"**{p.name}**: {p.description}" for p in protos])
    report.bullets([f"faithful group **{g.name}** ({len(g.seeds(profile))} seed(s)): {g.role}"
                    for g in FAITHFUL_GROUPS])
    report.heading("What the paper's numbers measured")
    report.bullets([f"**{label}**: {paper_number(key).note} Ours (faithful column): {paper_number(key).ours}."
                    for key, label in FIRST_TABLE_ROWS]
                   + [f"**{key}** ({paper_number(key).text}): {paper_number(key).note}" for key in CONTEXT_KEYS])
    if profile.reductions:
        report.heading(f"What the {profile.name} mode reduced")
        report.bullets(list(profile.reductions))
    _details(report, inputs)
    report.heading("Sweep (corrected protocol, SSM parity)")
    sweep = inputs.sweep
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
    report.paragraph("SSM parity, seeds pooled; the faithful figures use the original's entropy (bits of the "
                     "channel-mean state), the corrected ones the whole state's (nats).")
    for name, path in sorted(inputs.plots.items()):
        report.image(path, name)
    _runs_table(report, inputs.runs, inputs.excluded)
    return report


def _described(dist: dict[str, Any] | None, digits: int) -> list[str]:
    """Cells (values, mean, sd, min .. max) of a seed distribution (pna.analysis.seed_distribution)."""
    if dist is None:
        return ["undefined in every seed", "", "", ""]
    sd = "n/a" if dist["sd"] is None else f"{dist['sd']:.{digits}f}"
    return [", ".join(f"{v:.{digits}f}" for v in dist["values"]), f"{dist['mean']:.{digits}f}", sd,
            f"{dist['min']:.{digits}f} .. {dist['max']:.{digits}f}"]


def _headline(report: MarkdownReport, cell: dict[str, Any] | None, excluded: int = 0) -> None:
    """The headline cell E_ssm: each seed's faithful r and tau with the examples at each L default, their
    distribution, and the original's own spread of gradient-identical runs beside it; excluded: seeds left out
    because they did not learn their task."""
    report.heading("Headline cell E_ssm (alpha 0, beta 0.1, gamma 0) over seeds, beside the original's spread")
    if cell is None:
        report.paragraph(_none_learned(excluded).format())
        return
    if excluded:
        report.paragraph(f"Seeds that learned their task only: {_left_out(excluded)} (see 'Runs').")
    rows = []
    for seed, s in zip(cell.get("seeds", range(len(cell["per_seed"]))), cell["per_seed"]):
        t, x = s["tau"], s["xcorr"]
        rows.append([f"seed {seed}", _fmt(s["r"]["mean"], ".3f"), _fmt(t["mean"], ".2f"), s["n_analysed"],
                     f"{t['n_sc_default']} / {s['n']}", f"{t['n_hr_default']} / {s['n']}",
                     f"{t['n_both_default']} / {s['n']}", _fmt(s["halt_f1"], ".3f"),
                     _fmt(s["first_answer_accuracy"], ".3f"), f"{x['raw_peak_lag']} / {x['deriv_peak_lag']}"])
    report.table(["E_ssm run", "r", "tau", "n analysed", "sc = L (entropy never halved)", "hr = L (q never > 0.5)",
                  "both at L (tau = 0)", "halt F1 (PAD positive)", "first-answer acc", "xcorr peaks (levels / "
                  "derivatives, original axis)"], rows)
    spread = seed_distribution(list(ORIGINAL_BETA_01_SPREAD))
    seeds = len(cell["per_seed"])
    report.table(["", "values", "mean", "sd", "min .. max"], [
        [f"r, ours ({seeds} seeds of E_ssm)", *_described(cell["r"], 3)],
        [f"r, the original ({spread['n']} runs gradient-identical to E_ssm, no seed set)", *_described(spread, 3)],
        [f"tau, ours ({seeds} seeds of E_ssm)", *_described(cell["tau"], 2)],
        ["tau, the original (E_ssm)", paper_number("lag_tau").text, "", "", ""],
    ])
    report.paragraph(paper_number("ssm_r_spread").note)
    sc, hr, n = _default_counts(cell)
    report.paragraph(
        "Why tau has its value: tau = hr - sc per example (tau < 0: the halt signal leads), averaged over every "
        "example, with sc = L = rp + 1 where the channel-mean entropy never falls below half its first value and "
        f"hr = L where q never exceeds 0.5 by rp. Over the {seeds} seeds, sc took the default L in {sc} of {n} "
        f"examples and hr in {hr} of {n} (per seed: the table above). Where sc = L, tau = hr - L is set by when q "
        "crosses 0.5 alone, which the 0.5 halt labels at rp-2, rp-1 train to lie near L - 2: tau near -2 then "
        "says nothing about the entropy. Where hr = L too, tau = 0. The paper's "
        f"{paper_number('lag_tau').text}: {paper_number('lag_tau').note}")


def _definitions(report: MarkdownReport, both: dict[str, Any]) -> None:
    """r and tau of each corrected SSM run under the corrected and the original's definitions."""
    report.heading("The corrected SSMs under both definitions")
    rows = []
    for seed, d in enumerate(both["per_seed"]):
        cr, ct, f = d["corrected"]["r"], d["corrected"]["tau"], d["faithful"]
        rows.append([f"seed {seed}", f"{_fmt(cr['mean'], '.3f')} (n={cr['n']})",
                     f"{_fmt(f['r']['mean'], '.3f')} (n={f['r']['n_valid']})",
                     f"{_fmt(ct['mean'], '.2f')} (n={ct['n']}; {ct['n_censored']} censored)",
                     f"{_fmt(f['tau']['mean'], '.2f')} (n={f['n']}; sc = L in {f['tau']['n_sc_default']}, hr = L in "
                     f"{f['tau']['n_hr_default']})"])
    report.table(["corrected SSM parity run", "r, corrected (whole-state entropy, nats)",
                  "r, original (channel-mean entropy, bits)", "tau, corrected (min-max collapse, censored)",
                  "tau, original (half of the first value, L defaults kept)"], rows)
    report.paragraph("Same models, same test examples (the corrected pure-parity split), two definitions: the "
                     "difference between the columns is definition, not training. Both lags use tau = t_halt - "
                     "t_collapse (negative: the halt signal leads).")
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
        "over the tokens the input determines (trace, answer, HALT, EOS; not the random input tokens). "
        "Free-gen acc (in-distribution): greedy generation with the strict parse on our parity test inputs for the "
        "corrected runs; the original's generation inputs and lenient parse for the faithful parity runs.")
    report.table(["run", "epochs", "trace acc", "answer acc", "free-gen acc", "token acc", "mean r (corrected definition)", "learned",
                  "checkpoint"], [
        [name, r["epochs"], _fmt(r.get("trace_accuracy"), ".3f"), f"{r['answer_accuracy']:.3f}",
         _fmt(r.get("free_generation"), ".3f"), f"{r['token_accuracy']:.3f}", Estimate(r["coupling"]["mean"]).format(),
         r.get("verdict") or "yes", f"{r['run_dir']}/{r['checkpoint']}"]
        for name, r in sorted(runs.items())])


def _fmt(value: float | None, spec: str) -> str:
    """A JSON number formatted, or "n/a" where it was undefined (None)."""
    return "n/a" if value is None else format(value, spec)


def _details(report: MarkdownReport, inputs: ReportInputs) -> None:
    """Second-level tables: coupling statistics, halting metrics, free generation, transfer."""
    groups, transfer = inputs.groups, inputs.transfer
    generation = {k: v for k, v in inputs.generation.items() if k.startswith("corrected_")}
    report.heading("Coupling and lag under the corrected definitions (teacher forced, test split, seeds pooled)")
    report.paragraph("Every group, the faithful ones included, with the corrected statistics (whole-state "
                     "entropy in nats, min-max collapse, censored lag); the faithful numbers of the faithful groups "
                     "are in the first table and the headline cell.")
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
    report.heading("Free generation, faithful protocol (the original's inputs, lenient parse)")
    rows = []
    for key, gen in inputs.generation.items():
        if key.startswith("faithful_"):
            s = gen["summary"]
            rows.append([key, Estimate(gen["pooled"]["accuracy"], tuple(gen["pooled"]["ci"]), gen["pooled"]["n"],
                                       scale=100, digits=1).format(),
                         f"{100 * gen['in_dist']['accuracy']:.1f} (n={gen['in_dist']['n']})",
                         f"{100 * gen['ood']['accuracy']:.1f} (n={gen['ood']['n']})", f"{s['halt_accuracy']:.2f}",
                         ", ".join(f"{r} {n}" for r, n in sorted(s["stop_reasons"].items()))])
    report.table(["model (seed 0)", "pooled accuracy (%)", "in-distribution (%)", "OOD 9-10 bits (%)",
                  "halt accuracy", "stop reasons"], rows)
    report.paragraph(f"Greedy from '<BOS>Input:{{bits}} ', at most {ORIGINAL_MAX_NEW_TOKENS} new tokens, stop on "
                     "HALT, EOS or q > 0.95; the answer read leniently (the first 'Result:d', else the last '=d', "
                     "else the last 0/1), as the original did.")
    report.heading("Free generation, corrected protocol (parity, greedy, stop on HALT, EOS or q > 0.95)")
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
