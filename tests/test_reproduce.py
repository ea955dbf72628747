"""End-to-end tests of `pna reproduce --quick --tiny`: the report, its first table and the figures exist, the
faithful column is the original's definitions computed on the faithful runs (checked against direct calls on the
saved evaluations), the headline cell is a distribution over >= 3 seeds beside the original's spread, the
corrected SSMs are given under both definitions, every stage's outputs are written, a rerun skips the finished
stages, an interrupted copy resumed from elsewhere writes the same report, changed --alpha/--beta train new
corrected runs (the faithful ones, which do not depend on them, are reused), --force keeps the user's files."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from pna import checkpoint
from pna.analysis import seed_distribution
from pna.cli import main
from pna.evaluate import Evaluation, definitions_side_by_side, faithful_summary
from pna.paper import ORIGINAL_BETA_01_SPREAD, ROW_KEYS, paper_number
from pna.report import NOT_RUN, Estimate
from pna.reproduce import FIRST_TABLE_ROWS, TINY
from pna.tasks import first_answer_in, make_split
from pna.train import TrainConfig, load_checkpoint, train
from pna.transfer import TransferSettings, run_transfer


def _first_table(report: str) -> list[list[str]]:
    """Rows (cells) of the first Markdown table in the report."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reproduce")
    assert main(["reproduce", "--quick", "--tiny", "--out", str(out)]) == 0
    return out


def test_report_has_every_first_table_row(tiny_run: Path) -> None:
    report = (tiny_run / "report.md").read_text(encoding="utf-8")
    rows = _first_table(report)
    assert [row[0] for row in rows] == [label for _, label in FIRST_TABLE_ROWS]
    assert [key for key, _ in FIRST_TABLE_ROWS] == list(ROW_KEYS)
    for row in rows:
        assert len(row) == 4
        # every cell of both of our columns is measured: it carries an n (no "not run" in this mode)
        assert "n=" in row[2] and "n=" in row[3], row
    for reduction in TINY.reductions:
        assert reduction in report


def _run_dirs(out: Path, prefix: str) -> list[Path]:
    """The main-run folders of one label prefix (e.g. 'faithful_E_ssm_s'), in seed order."""
    return sorted((out / "runs").glob(f"{prefix}*-*"), key=lambda p: int(p.name[len(prefix):].split("-")[0]))


def _section(report: str, heading: str) -> str:
    return report.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]


def test_faithful_column_is_the_original_definitions_on_the_faithful_runs(tiny_run: Path) -> None:
    report = (tiny_run / "report.md").read_text(encoding="utf-8")
    cells = {row[0]: row[2] for row in _first_table(report)}
    runs = _run_dirs(tiny_run, "faithful_E_ssm_s")
    assert len(runs) >= 3
    for run in runs:  # the original's group E_ssm: its architecture, data, loss weights and fp32
        cfg = json.loads((run / "run.json").read_text())["config"]["config"]["train"]
        assert (cfg["variant"], cfg["data_protocol"], cfg["loss_mode"], cfg["bf16"]) == ("faithful",) * 3 + (False,)
        assert (cfg["alpha"], cfg["beta"], cfg["gamma"]) == (0.0, 0.1, 0.0)
    test = make_split("parity", "test", n=TINY.n_test, protocol="faithful")
    summaries = [faithful_summary(Evaluation.load(run / "test_eval.npz"), first_answer_in(test)) for run in runs]
    r = seed_distribution([s["r"]["mean"] for s in summaries])
    tau = seed_distribution([s["tau"]["mean"] for s in summaries])
    assert cells["SSM r (parity)"].startswith(f"{r['mean']:.3f} [{r['min']:.3f}, {r['max']:.3f}]")
    assert f"mean of {len(runs)} seeds" in cells["SSM r (parity)"]
    assert cells["Lag tau (SSM parity, threshold lag)"].startswith(f"{tau['mean']:.3f}")
    headline = _section(report, "Headline cell")
    for seed, s in enumerate(summaries):
        t = s["tau"]
        assert (f"| seed {seed} | {s['r']['mean']:.3f} | {t['mean']:.2f} | {s['n_analysed']} | "
                f"{t['n_sc_default']} / {s['n']} | {t['n_hr_default']} / {s['n']} |") in headline
    spread = seed_distribution(list(ORIGINAL_BETA_01_SPREAD))
    assert f"| {spread['mean']:.3f} | {spread['sd']:.3f} |" in headline
    assert "Why tau has its value" in headline


def test_corrected_ssms_are_given_under_both_definitions(tiny_run: Path) -> None:
    section = _section((tiny_run / "report.md").read_text(encoding="utf-8"), "The corrected SSMs under both")
    runs = _run_dirs(tiny_run, "corrected_parity_ssm_s")
    assert len(runs) == TINY.corrected_seeds
    for seed, run in enumerate(runs):
        both = definitions_side_by_side(Evaluation.load(run / "test_eval.npz")).to_dict()
        corrected, original = both["corrected"]["r"]["mean"], both["faithful"]["r"]["mean"]
        assert f"| seed {seed} | {corrected:.3f} (n=" in section
        assert f"| {original:.3f} (n={both['faithful']['r']['n_valid']}) |" in section


def test_figures_and_stage_outputs_exist(tiny_run: Path) -> None:
    pngs = sorted((tiny_run / "plots").glob("*.png")) + sorted((tiny_run / "sweep").glob("*.png"))
    names = {p.stem.rsplit("_", 1)[0] for p in pngs}
    assert {"curves", "xcorr", "r_hist", "sweep_mean", "sweep"} <= names
    assert all(p.stat().st_size > 1000 for p in pngs)
    report = (tiny_run / "report.md").read_text(encoding="utf-8")
    for png in pngs:
        assert str(png.relative_to(tiny_run)) in report
    for stage in ("analysis", "generation", "transfer"):
        files = list((tiny_run / stage).glob("*.json"))
        assert files and all(json.loads(f.read_text()) for f in files), stage


def test_rerun_skips_finished_stages(tiny_run: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("result.json")}
    assert main(["reproduce", "--quick", "--tiny", "--out", str(tiny_run)]) == 0
    assert {p: p.stat().st_mtime_ns for p in tiny_run.rglob("result.json")} == before


def test_estimate_formats_value_ci_n_and_missing() -> None:
    assert Estimate(-0.8123, (-0.83, -0.79), 791, "1 seed").format() == "-0.812 [-0.830, -0.790] (n=791; 1 seed)"
    assert Estimate(0.5, None, 10, scale=100, digits=1).format() == "50.0 (n=10)"
    assert Estimate(math.nan, (math.nan, math.nan), 0).format() == "undefined (n=0)"
    assert Estimate(None).format() == NOT_RUN


def test_every_paper_row_has_a_note() -> None:
    for key in ROW_KEYS:
        number = paper_number(key)
        assert number.text and number.note
    with pytest.raises(ValueError, match="key"):
        paper_number("no_such_row")


def test_finetuning_on_the_trainer_keeps_the_frozen_halt_head(tmp_path: Path) -> None:
    """Transfer's fine-tuning is a pna.train run from the source's weights: the halt head does not move, the rest
    does, and the run resumes (a second call trains nothing)."""
    source = train(TrainConfig(task="parity", tiny=True, n_train=32, n_val=8, max_epochs=1, quiet=True,
                               out_dir=str(tmp_path / "src")))
    settings = TransferSettings(n_train=32, n_val=8, n_test=8, max_epochs=2, patience=1, lr=1e-2)
    result = run_transfer(source.best_checkpoint, tmp_path / "ft", settings)
    frozen = [name for name, _ in source.model.named_parameters() if "halt" in name]
    assert result.frozen == frozen and frozen
    after, _ = load_checkpoint(tmp_path / "ft" / "best.pt")
    before = dict(source.model.named_parameters())
    after_params = dict(after.named_parameters())
    assert all(torch.equal(before[name], after_params[name]) for name in frozen)
    assert any(not torch.equal(before[n], after_params[n]) for n in before if n not in frozen)
    cfg = TrainConfig(**checkpoint.load(tmp_path / "ft" / "last.pt")["config"])
    assert (cfg.optimizer, cfg.weight_decay, cfg.early_stop, cfg.task) == ("adam", 0.0, "val_token_accuracy",
                                                                           "arithmetic")
    assert run_transfer(source.best_checkpoint, tmp_path / "ft", settings).history == result.history


def _runs_table_dirs(report: str) -> list[str]:
    section = report.split("## Runs", 1)[1]
    cells = [line.split(" | ")[-1].strip(" |") for line in section.splitlines() if line.startswith("| ")]
    return [cell.rsplit("/", 2)[0] for cell in cells if cell.startswith("runs/")]


def test_interrupted_copy_resumed_from_another_directory_writes_the_same_report(tiny_run, tmp_path, monkeypatch):
    """Copy the output folder, undo part of it as a kill would (a job's result and evaluation gone, its
    metrics.jsonl cut, the analysis and the report gone) and rerun from another working directory with a
    relative --out: the report is byte-identical."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    job = sorted((copy / "runs").glob("corrected_parity_ssm_s1-*"))[0]
    (job / "result.json").unlink()
    (job / "test_eval.npz").unlink()
    metrics = job / "train" / "metrics.jsonl"
    metrics.write_text(metrics.read_text()[:10])
    shutil.rmtree(copy / "analysis")
    (copy / "report.md").unlink()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["reproduce", "--quick", "--tiny", "--out", "../copy"]) == 0
    assert (copy / "report.md").read_bytes() == (tiny_run / "report.md").read_bytes()


def test_changed_alpha_beta_give_new_runs_not_stale_numbers(tiny_run, tmp_path):
    """--alpha / --beta set the corrected protocol's runs: those are new; the faithful runs (the original's own
    weights) are the same jobs, read back."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    old = set(_runs_table_dirs((tiny_run / "report.md").read_text()))
    assert main(["reproduce", "--tiny", "--skip-sweep", "--alpha", "0.5", "--beta", "0", "--out", str(copy)]) == 0
    report = (copy / "report.md").read_text()
    assert "alpha = 0.5, beta = 0.0" in report
    new = _runs_table_dirs(report)
    corrected = [run for run in new if run.startswith("runs/corrected_")]
    assert corrected and not set(corrected) & old
    assert {run for run in new if run.startswith("runs/faithful_")} <= old
    for run in corrected:
        train_cfg = json.loads((copy / run / "run.json").read_text())["config"]["config"]["train"]
        assert (train_cfg["alpha"], train_cfg["beta"]) == (0.5, 0.0)


def test_force_keeps_user_files(tiny_run):
    """Last in this file: it redoes the shared run. --force deletes what pna wrote, never the user's files, nor a
    `pna train` run the user keeps inside --out."""
    (tiny_run / "runs" / "mine.txt").write_text("mine")
    (tiny_run / "plots" / "notes.md").write_text("mine")
    (tiny_run / "keep.txt").write_text("mine")
    assert main(["train", "--tiny", "--quiet", "--n-train", "16", "--n-val", "8", "--epochs", "1",
                 "--out", str(tiny_run / "runs" / "train")]) == 0
    before = {p.name for p in (tiny_run / "runs").iterdir()}
    assert main(["reproduce", "--quick", "--tiny", "--skip-sweep", "--force", "--out", str(tiny_run)]) == 0
    for path in ("runs/mine.txt", "plots/notes.md", "keep.txt", "runs/train/best.pt"):
        assert (tiny_run / path).exists(), path
    assert not (tiny_run / "sweep").exists()  # written by the first run, removed by --force, not redone
    assert {p.name for p in (tiny_run / "runs").iterdir()} == before
