"""`pna reproduce`'s plan and wall-time estimate: the arithmetic on a fake probe, and --dry-run (plan and estimate
printed, nothing trained, exit 0)."""
from __future__ import annotations

import argparse
import math
import subprocess
import sys

import pytest

from pna.reproduce import QUICK, TINY, announce, add_arguments
from pna.reproduce.estimate import FORWARD_SHARE, PlannedRun, estimate, format_duration, plan_stages
from pna.reproduce.profiles import TRANSFER_MODELS
from pna.reproduce.stages import main_jobs, transfer_sources
from pna.train import TrainConfig


def _cfg(**fields) -> TrainConfig:
    return TrainConfig(**{"tiny": True, "n_train": 320, "n_val": 64, "max_epochs": 3, "batch_size": 32, **fields})


def test_steps_count_training_and_forward_passes() -> None:
    run = PlannedRun("main runs", "a", _cfg(), n_eval=100)
    # 3 epochs x 10 training batches; forward: 3 x 2 validation batches + 4 test batches, a third of a step each
    assert run.steps == 30 + math.ceil(10 * FORWARD_SHARE)


def test_estimate_multiplies_steps_by_probed_seconds_and_divides_by_workers() -> None:
    runs = [PlannedRun("main runs", "p1", _cfg(), 0), PlannedRun("main runs", "p2", _cfg(seed=1), 0),
            PlannedRun("main runs", "t", _cfg(arch="transformer"), 0), PlannedRun("sweep", "s", _cfg(alpha=0.5), 0)]
    probed = []

    def fake(cfg: TrainConfig) -> float:
        probed.append(cfg.arch)
        return {"ssm": 0.5, "transformer": 0.25}[cfg.arch]

    steps = runs[0].steps
    est = estimate(runs, fake, workers=2)
    assert probed == ["ssm", "transformer"]  # one probe per model kind
    assert est.stage_seconds["main runs"] == pytest.approx((2 * 0.5 + 0.25) * steps / 2)
    assert est.stage_seconds["sweep"] == pytest.approx(0.5 * steps)  # one job: nothing runs beside it
    assert est.total_seconds == pytest.approx(sum(est.stage_seconds.values()))
    assert est.probed == {"parity ssm default": 0.5, "parity transformer default": 0.25}
    with pytest.raises(ValueError, match="workers"):
        estimate(runs, fake, workers=0)


@pytest.mark.parametrize("seconds, text", [(45, "45 s"), (750, "12 min 30 s"), (3900, "1 h 05 min")],
                         ids=["seconds", "minutes", "hours"])
def test_format_duration(seconds, text) -> None:
    assert format_duration(seconds) == text


def test_plan_covers_main_runs_transfer_and_sweep_unless_dropped() -> None:
    jobs = main_jobs(TINY, 0.05, 0.1, "cpu")
    stages = [r.stage for r in plan_stages(TINY, jobs, "cpu", skip_sweep=False)]
    n_transfer = sum(len(sources) for sources in transfer_sources(TINY, jobs).values())
    assert n_transfer == 2 * TINY.transfer_seeds + 2 * TRANSFER_MODELS  # corrected + the faithful two per arch
    n_sweep = len(TINY.sweep_alphas) * len(TINY.sweep_betas) * len(TINY.sweep_seeds)
    assert stages == ["main runs"] * len(jobs) + ["transfer"] * n_transfer + ["sweep"] * n_sweep
    assert {r.stage for r in plan_stages(TINY, jobs, "cpu", skip_sweep=True, skip_transfer=True)} == {"main runs"}


def test_announce_prints_plan_and_estimate(capsys) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--tiny", "--device", "cpu"])
    jobs = main_jobs(TINY, args.alpha, args.beta, "cpu")
    est = announce(args, TINY, 1, jobs, step_seconds=lambda cfg: 0.01)
    printed = capsys.readouterr().out
    assert "faithful_E_ssm_s0" in printed and "corrected_parity_ssm_s0" in printed and "estimate" in printed and "total" in printed
    assert est.total_seconds > 0


def test_dry_run_prints_plan_and_trains_nothing(tmp_path) -> None:
    out = tmp_path / "never"
    done = subprocess.run([sys.executable, "-m", "pna.cli", "reproduce", "--tiny", "--dry-run", "--device", "cpu",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "plan:" in done.stdout and "probe (s per training step)" in done.stdout and "total" in done.stdout
    assert not out.exists()


def test_overall_progress_jumps_to_each_finished_stage() -> None:
    from pna.reproduce.estimate import Estimate as Planned, OverallProgress
    bar = OverallProgress(Planned({"main runs": 100.0, "sweep": 50.0}, workers=2, probed={}), disable=False)
    assert bar._bar.total == 150
    bar.start("main runs")
    bar.finish("main runs")
    assert bar._bar.n == 100
    bar.start("sweep")
    bar.finish("sweep")
    bar.close()
    assert bar._bar.n == 150
