"""Whether a main run of `pna reproduce` learned its task, and the per-run accuracies the report's runs table
shows. Coupling, lag and transfer are only defined for models that do the task, so a run below the thresholds
is marked "did not learn" and (in every mode but the smoke test) left out of the headline cells."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .profiles import Protocol


@dataclass(frozen=True)
class LearnThreshold:
    """What a run must reach to count as having learned its task: teacher-forced trace accuracy (the targets
    the input determines, answer included; pna.evaluate.Evaluation.trace_accuracy) and, where measured, the
    in-distribution free-generation answer accuracy (None: not required)."""

    trace_accuracy: float
    free_generation: float | None = None


THRESHOLDS = {"parity": LearnThreshold(trace_accuracy=0.99, free_generation=0.90),
              "sorting": LearnThreshold(trace_accuracy=0.95)}


def learning_verdict(task: str, trace_accuracy: float, free_generation: float | None = None) -> str:
    """"" when a run of `task` learned it, else "did not learn: trace acc 0.830 < 0.99" (every failed test named,
    joined by "; "). free_generation None: not measured, not checked."""
    if task not in THRESHOLDS:
        raise ValueError(f"task: expected one of {tuple(THRESHOLDS)}, got {task!r}")
    need = THRESHOLDS[task]
    failed = []
    if not trace_accuracy >= need.trace_accuracy:  # NaN fails
        failed.append(f"trace acc {trace_accuracy:.3f} < {need.trace_accuracy:g}")
    if need.free_generation is not None and free_generation is not None and not free_generation >= need.free_generation:
        failed.append(f"free-gen acc {free_generation:.3f} < {need.free_generation:g}")
    return "did not learn: " + "; ".join(failed) if failed else ""


def per_run_free_generation(protos: Sequence[Protocol], generation: dict[str, dict[str, Any]],
                            run_name: Any) -> dict[str, float]:
    """In-distribution free-generation answer accuracy of each parity main run, by run label: generation is
    keyed "<protocol>_<arch>" with one per_seed summary per seed in protocol.seeds order (stages.generation_stage);
    run_name(protocol, task, arch, seed) gives the label."""
    found: dict[str, float] = {}
    for p in protos:
        for key, gen in generation.items():
            if not key.startswith(p.name + "_"):
                continue
            arch = key[len(p.name) + 1:]
            for seed, summary in zip(p.seeds, gen["in_dist"]["per_seed"]):
                found[run_name(p, "parity", arch, seed)] = float(summary["answer_accuracy"])
    return found


def mark_runs(runs: dict[str, dict[str, Any]], free_generation: dict[str, float]) -> dict[str, dict[str, Any]]:
    """runs (label -> the main job's result with "task") with "free_generation" (None where not measured) and
    "verdict" (learning_verdict; "" = learned) added."""
    marked = {}
    for label, r in runs.items():
        free = free_generation.get(label)
        marked[label] = {**r, "free_generation": free,
                         "verdict": learning_verdict(r["task"], r["trace_accuracy"], free)}
    return marked
