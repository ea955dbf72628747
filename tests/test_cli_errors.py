"""Every user error of `pna train`, `pna sweep` and `pna reproduce` exits 2 with one line naming the argument
and what was wrong, before any training starts (divergence: as soon as the trainer sees it)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pna import runner
from pna.cli import main

TINY_TRAIN = ["train", "--tiny", "--quiet", "--n-train", "32", "--n-val", "8", "--epochs", "1"]


def _error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def _config(tmp_path: Path, **fields) -> str:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(fields))
    return str(path)


CASES = {
    "out-is-a-file": (lambda t: TINY_TRAIN + ["--out", str(t / "afile")], "--out: {t}/afile names a file"),
    "out-under-a-file": (lambda t: TINY_TRAIN + ["--out", str(t / "afile" / "x")], "lies under the file"),
    "config-seed-abc": (lambda t: ["train", "--config", _config(t, seed="abc"), "--out", str(t / "r")],
                        "seed: expected an integer in [0, 2**32 - 1], got 'abc'"),
    "config-d-model-negative": (lambda t: ["train", "--config", _config(t, model={"d_model": -4}),
                                           "--out", str(t / "r")], "model.d_model: expected an integer >= 1, got -4"),
    "config-tiny-no": (lambda t: ["train", "--config", _config(t, tiny="no"), "--out", str(t / "r")],
                       "tiny: expected true or false, got 'no'"),
    "device-meta": (lambda t: TINY_TRAIN + ["--device", "meta", "--out", str(t / "r")], "--device: expected 'auto'"),
    "seed-negative": (lambda t: TINY_TRAIN + ["--seed", "-5", "--out", str(t / "r")],
                      "--seed: expected an integer in [0, 2**32 - 1], got -5"),
    "sweep-n-test-0": (lambda t: ["sweep", "--tiny", "--n-test", "0", "--out", str(t / "s")],
                       "--n-test: expected an integer >= 1, got 0"),
    "sweep-seeds-negative": (lambda t: ["sweep", "--tiny", "--seeds", "-1", "--out", str(t / "s")],
                             "--seeds: expected an integer in [0, 2**32 - 1]"),
    "sweep-out-is-a-file": (lambda t: ["sweep", "--tiny", "--out", str(t / "afile")], "--out: "),
    "reproduce-device-meta": (lambda t: ["reproduce", "--tiny", "--device", "meta", "--out", str(t / "p")],
                              "--device: expected 'auto'"),
    "reproduce-alpha-negative": (lambda t: ["reproduce", "--tiny", "--alpha", "-1", "--out", str(t / "p")],
                                 "--alpha: expected a finite number >= 0"),
    "reproduce-out-is-a-file": (lambda t: ["reproduce", "--tiny", "--out", str(t / "afile")], "names a file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_exits_2_naming_the_argument(case, tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    make_argv, expected = CASES[case]
    line = _error_line(make_argv(tmp_path), capsys)
    assert expected.format(t=tmp_path) in line
    # nothing was trained or written
    assert sorted(p.name for p in tmp_path.iterdir()) in (["afile"], ["afile", "cfg.json"])


def test_corrupt_last_checkpoint_is_named_with_the_way_out(tmp_path, capsys):
    out = tmp_path / "r"
    argv = TINY_TRAIN + ["--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 2])
    line = _error_line(argv, capsys)
    assert f"--out: {out / 'last.pt'} is truncated or not a checkpoint" in line and "--force" in line
    (out / "notes.txt").write_text("mine")
    assert main(argv + ["--force"]) == 0  # --force starts over, keeping the user's file
    assert (out / "notes.txt").read_text() == "mine"


def test_diverging_run_is_reported_by_the_trainer(tmp_path, capsys):
    line = _error_line(TINY_TRAIN + ["--lr", "1e30", "--warmup-steps", "0", "--out", str(tmp_path / "r")], capsys)
    assert line.startswith("pna train: error: --lr: training diverged in epoch 1") and "NaN or Inf\n" not in line
    assert "A: contains NaN" not in line.split("(", 1)[0]


def test_second_writer_of_one_out_is_refused(tmp_path, capsys):
    out = tmp_path / "r"
    with runner.RunLock(out):
        line = _error_line(TINY_TRAIN + ["--out", str(out)], capsys)
    assert f"{out}: another process" in line


def test_another_config_in_the_same_out_is_refused_with_the_fields(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(TINY_TRAIN + ["--out", str(out)]) == 0
    capsys.readouterr()
    line = _error_line(TINY_TRAIN + ["--alpha", "0.5", "--out", str(out)], capsys)
    assert "--out:" in line and "alpha 0.05 -> 0.5" in line
