"""The stages of `pna reproduce` on the job runner: main training runs, analysis, free generation, transfer,
the sweep and the figures. Every stage's output is keyed by the identities of its inputs and its settings
(pna.runner), so changed settings (e.g. --alpha) never read back an earlier invocation's numbers."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pna import analysis, runner
from pna.evaluate import Evaluation
from pna.generate import answer_correct, free_generation
from pna.sweep import train_eval_job
from pna.tasks import make_split
from pna.train import load_checkpoint

from .profiles import MAIN_RUNS, Profile, Protocol, protocols

PARITY_MAX_LEN = 64
OOD_BITS = (9, 10)


def run_name(protocol: Protocol, task: str, arch: str, seed: int) -> str:
    """Label of one main training run."""
    return f"{protocol.name}_{task}_{arch}_s{seed}"


def main_jobs(profile: Profile, alpha: float, beta: float, device: str) -> dict[str, runner.Job]:
    """Every main training run by label: both protocols x MAIN_RUNS x the protocol's seeds."""
    return {
        run_name(p, task, arch, seed): train_eval_job(
            run_name(p, task, arch, seed),
            {**profile.train_fields(task, arch), "task": task, "arch": arch, "variant": p.variant(arch), "loss_mode": p.loss_mode,
             "alpha": alpha, "beta": beta, "seed": seed},
            n_test=profile.n_test, device=device)
        for p in protocols(profile) for task, arch in MAIN_RUNS for seed in p.seeds
    }


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
