"""Which main runs of `pna reproduce` learned their task: the verdict, the per-run free generation, the runs
table's marking and the headline cells that leave such runs out (with the count shown)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pna.report import MarkdownReport
from pna.reproduce.learning import learning_verdict, mark_runs, per_run_free_generation
from pna.reproduce.profiles import QUICK, TINY, protocols
from pna.reproduce.report import ReportInputs, _runs_table, corrected_cells, dropped_cells, faithful_cells
from pna.reproduce.stages import run_name


@pytest.mark.parametrize("task, trace, free, want", [
    ("parity", 0.995, 0.93, ""),
    ("parity", 0.83, 0.95, "did not learn: trace acc 0.830 < 0.99"),
    ("parity", 0.999, 0.40, "did not learn: free-gen acc 0.400 < 0.9"),
    ("parity", 0.5, 0.5, "did not learn: trace acc 0.500 < 0.99; free-gen acc 0.500 < 0.9"),
    ("parity", 0.995, None, ""),
    ("parity", math.nan, None, "did not learn: trace acc nan < 0.99"),
    ("sorting", 0.96, None, ""),
    ("sorting", 0.94, None, "did not learn: trace acc 0.940 < 0.95"),
], ids=["parity-learned", "parity-trace-low", "parity-freegen-low", "parity-both-low", "parity-no-freegen",
        "parity-nan", "sorting-learned", "sorting-low"])
def test_learning_verdict(task, trace, free, want) -> None:
    assert learning_verdict(task, trace, free) == want


def test_learning_verdict_rejects_unknown_task() -> None:
    with pytest.raises(ValueError, match="task"):
        learning_verdict("chess", 1.0)


def _run(task: str, trace: float) -> dict:
    return {"task": task, "trace_accuracy": trace, "answer_accuracy": 1.0, "token_accuracy": 0.9, "epochs": 3,
            "coupling": {"mean": -0.5}, "run_dir": "runs/x", "checkpoint": "train/best.pt"}


def test_runs_marked_and_table_shows_trace_free_generation_and_verdict() -> None:
    faithful, corrected = protocols(QUICK)
    per_seed = [{"answer_accuracy": 0.95}, {"answer_accuracy": 0.42}]
    generation = {"corrected_ssm": {"in_dist": {"per_seed": per_seed}}}
    free = per_run_free_generation([faithful, corrected], generation, run_name)
    assert free == {"corrected_parity_ssm_s0": 0.95, "corrected_parity_ssm_s1": 0.42}
    runs = mark_runs({"corrected_parity_ssm_s0": _run("parity", 0.995), "corrected_parity_ssm_s1": _run("parity", 0.995),
                      "corrected_sorting_ssm_s0": _run("sorting", 0.83)}, free)
    assert runs["corrected_parity_ssm_s0"]["verdict"] == ""
    assert runs["corrected_parity_ssm_s1"]["verdict"] == "did not learn: free-gen acc 0.420 < 0.9"
    assert runs["corrected_sorting_ssm_s0"]["free_generation"] is None
    report = MarkdownReport("t")
    _runs_table(report, runs, {"corrected_parity_ssm": 1, "corrected_sorting_ssm": 1})
    text = report.render()
    assert "1 of 3 main runs learned their task" in text and "2 run(s) that did not" in text
    row = next(line for line in text.splitlines() if line.startswith("| corrected_sorting_ssm_s0"))
    assert "| 0.830 |" in row and "did not learn: trace acc 0.830 < 0.95" in row and "| n/a |" in row
    row = next(line for line in text.splitlines() if line.startswith("| corrected_parity_ssm_s0"))
    assert "| 0.995 |" in row and "| 0.950 |" in row and "| yes |" in row


def test_headline_cells_show_how_many_runs_were_left_out() -> None:
    _, corrected = protocols(QUICK)
    group = {"n_seeds": 1, "per_seed_r": [-0.4], "coupling": {"mean": -0.4, "ci_low": -0.5, "ci_high": -0.3, "n": 50},
             "lag": {"mean": -1.0, "ci_low": -1.2, "ci_high": -0.8, "n": 50, "n_censored": 0},
             "teacher_forced": {"answer_accuracy": 1.0, "answer_ci": [1.0, 1.0], "n": 50}}
    inputs = ReportInputs(groups={"corrected_parity_ssm": group}, faithful={}, side_by_side={}, generation={},
                          transfer={}, sweep=None, plots={}, runs={},
                          excluded={"corrected_parity_ssm": 1, "corrected_sorting_ssm": 2})
    cells = corrected_cells(corrected, inputs)
    assert "1 run did not learn, left out" in cells["ssm_r"].format() and "n=50" in cells["ssm_r"].format()
    assert cells["sorting_r"].format() == "no run learned its task (2 runs did not learn, left out)"
    assert "did not learn" not in cells["transformer_r"].format()
    none_kept = corrected_cells(corrected, _inputs({}, {"corrected_parity_ssm": 2}))
    assert none_kept["lag_tau"].format() == "no run learned its task (2 runs did not learn, left out)"


def _inputs(faithful: dict, excluded: dict) -> ReportInputs:
    return ReportInputs(groups={}, faithful=faithful, side_by_side={}, generation={}, transfer={}, sweep=None,
                        plots={}, runs={}, excluded=excluded)


def test_faithful_cells_count_the_seeds_that_did_not_learn() -> None:
    faithful, _ = protocols(QUICK)
    seed = {"n_analysed": 40, "n_split": 50, "n": 40, "first_answer_accuracy": 0.9,
            "tau": {"mean": -1.0, "n_sc_default": 1, "n_hr_default": 2}}
    dist = {"mean": -0.5, "min": -0.6, "max": -0.4, "sd": 0.1, "n": 2, "values": [-0.6, -0.4]}
    head = {"per_seed": [seed, seed], "seeds": [0, 2], "r": dist, "tau": dist}
    cells = faithful_cells(faithful, _inputs({"E_ssm": head}, {"faithful_E_ssm": 1, "faithful_E_sort": 1}))
    assert "mean of 2 seeds" in cells["ssm_r"].format() and "1 run did not learn, left out" in cells["ssm_r"].format()
    assert "1 run did not learn, left out" in cells["lag_tau"].format()
    assert cells["sorting_r"].format() == "no run learned its task (1 run did not learn, left out)"
    empty = faithful_cells(faithful, _inputs({}, {"faithful_E_ssm": 3}))
    assert empty["ssm_r"].format() == "no run learned its task (3 runs did not learn, left out)"


@pytest.mark.parametrize("profile, dropped", [(QUICK, True), (TINY, False)], ids=["quick-drops", "tiny-runs"])
def test_transfer_rows_say_when_the_mode_dropped_them(profile, dropped) -> None:
    cells = dropped_cells(profile)
    assert bool(cells) == dropped
    for key, cell in cells.items():
        assert key.startswith("transfer_") and cell.value is None and "dropped in quick mode" in cell.format()


def test_parity_trace_accuracy_is_judged_on_the_parity_examples_of_a_mixed_split():
    from pna.sweep import task_trace_accuracy
    from pna.tasks import example_from_text
    from pna.tasks.parity import parity_text, two_operand_text

    examples = [example_from_text(parity_text("101"), {"kind": "parity"}),
                example_from_text(two_operand_text("12+30"), {"kind": "two_operand"})]

    class Ev:  # the two fields task_trace_accuracy reads, per example: 10/10 on parity, 5/10 on the sum
        n = 2

        def __init__(self, correct, count):
            self.trace_correct, self.trace_count = np.asarray(correct), np.asarray(count)

        @property
        def trace_accuracy(self):
            return float(self.trace_correct.sum() / self.trace_count.sum())

    ev = Ev([10, 5], [10, 10])
    assert task_trace_accuracy(ev, examples, "parity") == 1.0
    assert task_trace_accuracy(ev, examples, "sorting") == 0.75  # no example of that kind: all of them
