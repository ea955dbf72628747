"""The stages of `pna reproduce` on the job runner: main training runs, analysis, free generation, transfer,
the sweep and the figures. Every stage's output is keyed by the identities of its inputs and its settings
(pna.runner), so changed settings (e.g. --alpha) never read back an earlier invocation's numbers."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pna import analysis, runner
from pna.analysis.probe import answer_entropy_r
from pna.evaluate import Evaluation, definitions_side_by_side, faithful_summary
from pna.generate import ORIGINAL_MAX_NEW_TOKENS, answer_correct, free_generation
from pna.sweep import train_eval_job
from pna.tasks import make_split
from pna.tasks.original import original_generation_examples
from pna.train import TrainConfig, load_checkpoint

from .profiles import (ARCHS, FAITHFUL_GROUPS, MAIN_RUNS, TRANSFER_MODELS, OriginalGroup, Profile, Protocol,
                       protocols)

PARITY_MAX_LEN = 64
# The original generated up to 256 positions (its models' max_seq_len).
FAITHFUL_GENERATION_MAX_LEN = 256
OOD_BITS = (9, 10)


def run_name(protocol: Protocol, task: str, arch: str, seed: int) -> str:
    """Label of one main training run."""
    return f"{protocol.name}_{task}_{arch}_s{seed}"


def faithful_run_name(group: OriginalGroup, seed: int) -> str:
    """Label of one faithful-protocol run of an original group, e.g. 'faithful_E_ssm_s0'."""
    return f"faithful_{group.name}_s{seed}"


def main_jobs(profile: Profile, alpha: float, beta: float, device: str) -> dict[str, runner.Job]:
    """Every main training run by label: the corrected protocol's MAIN_RUNS x its seeds at (alpha, beta), and the
    faithful protocol's FAITHFUL_GROUPS x their seeds (the original's variants, data, loss and weights, fp32)."""
    corrected = protocols(profile)[1]
    jobs = {
        run_name(corrected, task, arch, seed): train_eval_job(
            run_name(corrected, task, arch, seed),
            {**profile.train_fields(task, arch), "task": task, "arch": arch, "variant": corrected.variant(arch),
             "loss_mode": corrected.loss_mode, "alpha": alpha, "beta": beta, "seed": seed},
            n_test=profile.n_test, device=device)
        for task, arch in MAIN_RUNS for seed in corrected.seeds
    }
    for group in FAITHFUL_GROUPS:
        for seed in group.seeds(profile):
            jobs[faithful_run_name(group, seed)] = train_eval_job(
                faithful_run_name(group, seed),
                {**profile.train_fields(group.task, group.arch), "task": group.task, "arch": group.arch,
                 "variant": "faithful",
                 "loss_mode": "faithful", "data_protocol": "faithful", "bf16": False, "alpha": group.alpha,
                 "beta": group.beta, "gamma": 0.0, "seed": seed},
                n_test=profile.n_test, device=device)
    return jobs


def transfer_sources(profile: Profile, jobs: dict[str, runner.Job]) -> dict[str, list[tuple[str, runner.Job, int]]]:
    """The parity main runs each transfer cell fine-tunes, as (transfer label, source main job, seed) per cell:
    "corrected_<arch>": the first profile.transfer_seeds corrected seeds; "faithful_<arch>": the first
    TRANSFER_MODELS seeds of E_ssm / E_trans (the original's two models per architecture). jobs: main_jobs."""
    corrected = protocols(profile)[1]
    by_name = {g.name: g for g in FAITHFUL_GROUPS}
    sources = {f"corrected_{arch}": [(f"corrected_{arch}_s{s}", jobs[run_name(corrected, "parity", arch, s)], s)
                                     for s in corrected.seeds[: profile.transfer_seeds]] for arch in ARCHS}
    for arch, name in zip(ARCHS, ("E_ssm", "E_trans")):
        labels = [(faithful_run_name(by_name[name], s), s) for s in by_name[name].seeds(profile)[:TRANSFER_MODELS]]
        sources[f"faithful_{arch}"] = [(label, jobs[label], s) for label, s in labels]
    return sources


def job_test_split(job: runner.Job) -> list:
    """The test examples a finished train_eval_job evaluated on (regenerated: the splits are deterministic)."""
    return TrainConfig(**job.config["train"]).split("test", job.config["n_test"])


def faithful_cell(evaluations: Sequence[Evaluation], analysed: Sequence[int] | None,
                  seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """The faithful statistics of one group of SSM runs (one evaluation per seed, protocol "faithful"):
    pna.evaluate.faithful_summary of each seed over `analysed` (None: every example; the parity cell:
    pna.tasks.first_answer_in of the mixed test split), and the seeds' mean r and mean tau as distributions
    (pna.analysis.seed_distribution; None where no seed gave a number). seeds: the evaluations' seeds (None:
    0, 1, ...), kept as "seeds" (the runs that did not learn are left out before this)."""
    per_seed = [faithful_summary(ev, range(ev.n) if analysed is None else analysed) for ev in evaluations]

    def distribution(name: str) -> dict[str, Any] | None:
        values = [s[name]["mean"] for s in per_seed if s[name]["mean"] is not None]
        return analysis.seed_distribution(values) if values else None

    return {"per_seed": per_seed, "seeds": list(range(len(per_seed)) if seeds is None else seeds),
            "r": distribution("r"), "tau": distribution("tau")}


def phase8_stage(checkpoint: str | Path, train_job: runner.Job, device: str) -> dict[str, Any]:
    """The original's Transformer r (Phase 8, pna.analysis.probe.answer_entropy_r) of the CE-only Transformer at
    checkpoint: the probe learns on the run's own (faithful) training split and is scored on its test split."""
    cfg = TrainConfig(**train_job.config["train"])
    model, _ = load_checkpoint(checkpoint, device)
    result = answer_entropy_r(model, cfg.split("train", cfg.split_sizes()[0]), job_test_split(train_job),
                              device=device)
    return result.to_dict()


def faithful_generation_stage(checkpoint: str | Path, profile: Profile, device: str) -> dict[str, Any]:
    """The original's free generation of one checkpoint: pna.tasks.original.original_generation_examples (the
    profile's n_free in-distribution + n_free_ood OOD inputs, pooled), up to ORIGINAL_MAX_NEW_TOKENS new tokens,
    stop at q > 0.95, lenient parse; the pooled accuracy with its bootstrap CI and each part's."""
    examples = original_generation_examples(profile.n_free, profile.n_free_ood)
    model, _ = load_checkpoint(checkpoint, device)
    summary, gens = free_generation(model, examples, max_len=FAITHFUL_GENERATION_MAX_LEN, device=device,
                                    max_new_tokens=ORIGINAL_MAX_NEW_TOKENS, parse="lenient")
    correct = np.array(answer_correct(gens, examples, parse="lenient"), dtype=float)
    ood = np.array([bool(ex.meta.get("ood")) for ex in examples])
    return {"pooled": {"accuracy": float(correct.mean()), "ci": list(analysis.bootstrap_ci(correct)),
                       "n": int(correct.size)},
            "in_dist": {"accuracy": float(correct[~ood].mean()), "n": int((~ood).sum())},
            "ood": {"accuracy": float(correct[ood].mean()), "n": int(ood.sum())},
            "summary": summary.to_dict()}


def side_by_side_stage(evaluations: Sequence[Evaluation]) -> dict[str, Any]:
    """r and tau of each corrected SSM run (one evaluation per seed) under both protocols'
    definitions (pna.evaluate.definitions_side_by_side)."""
    return {"per_seed": [definitions_side_by_side(ev).to_dict() for ev in evaluations]}


def pooled(evaluations: Sequence[Evaluation]) -> Evaluation:
    """One Evaluation holding the examples of several (same task and length)."""
    return Evaluation(**{name: np.concatenate([getattr(e, name) for e in evaluations])
                         for name in Evaluation.__dataclass_fields__})


def analyse_group(evaluations: Sequence[Evaluation]) -> dict[str, Any]:
    """Coupling, lag, cross-correlation, halting and teacher-forced accuracy of one group of runs (one per seed).

    Examples of every seed are pooled for the summaries; per_seed_r keeps each seed's own mean r.
    """
    ev = pooled(evaluations)
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


def generation_stage(checkpoints: Sequence[str | Path], profile: Profile, device: str) -> dict[str, Any]:
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
