"""The job runner: identity by config hash, locks, atomic writes and manifests, --force keeping user files,
finished-ness of a cut metrics.jsonl, and workers that die with their parent."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pna import atomic, runner

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _echo_job(label: str, **config) -> runner.Job:
    return runner.Job(fn="pna.runner:json_default", label=label, config=config)


@pytest.mark.parametrize("a,b,same", [
    ({"x": 1.0, "y": [1, 2]}, {"y": (1, 2), "x": 1.0}, True),
    ({"x": 1.0}, {"x": 1}, False),
    ({"x": {"d_model": 64}}, {"x": {"d_model": 65}}, False),
], ids=["order-and-tuples", "float-vs-int", "nested"])
def test_config_key_is_the_identity(a, b, same):
    assert (runner.config_key(a) == runner.config_key(b)) == same


def test_config_diff_names_the_fields():
    assert runner.config_diff({"arch": "ssm", "m": {"d": 1}}, {"arch": "transformer", "m": {"d": 2}}) == [
        "arch 'ssm' -> 'transformer'", "m.d 1 -> 2"]


def test_job_folder_is_keyed_by_config_not_label():
    a, b = _echo_job("x", alpha=0.05), _echo_job("x", alpha=0.5)
    assert a.dir_name != b.dir_name and a.dir_name.startswith("x-")
    assert runner.Job(fn=a.fn, label="x", config={"alpha": 0.05}, options={"device": "cuda"}).key == a.key


def test_identity_refusal_lists_differing_fields(tmp_path):
    runner.write_identity(tmp_path, "f", {"arch": "ssm", "seed": 0})
    assert runner.check_identity(tmp_path, "f", {"arch": "ssm", "seed": 0})
    with pytest.raises(ValueError, match=r"^--out: .* another config \(arch 'ssm' -> 'transformer'\)"):
        runner.check_identity(tmp_path, "f", {"arch": "transformer", "seed": 0})


def test_second_writer_fails_fast_naming_the_folder(tmp_path):
    with runner.RunLock(tmp_path / "run"):
        with pytest.raises(runner.RunLocked, match=f"^{tmp_path / 'run'}: another process \\(pid {os.getpid()}\\)"):
            runner.RunLock(tmp_path / "run").__enter__()
    with runner.RunLock(tmp_path / "run"):  # released on exit
        pass


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / runner.LOCK_FILE).write_text(dead.stdout.strip())
    with runner.RunLock(tmp_path):
        assert (tmp_path / runner.LOCK_FILE).read_text() == str(os.getpid())


def test_atomic_writes_leave_no_temporary_files_and_a_manifest(tmp_path):
    atomic.write_json(tmp_path / "a.json", {"b": 1, "a": 2})
    atomic.write_text(tmp_path / "a.json", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == [atomic.MANIFEST, "a.json"]
    assert atomic.read_manifest(tmp_path) == ["a.json"]


def test_remove_written_keeps_user_files(tmp_path):
    root = tmp_path / "out"
    run_dir = atomic.make_dirs(root / "runs" / "x", base=root)
    atomic.write_text(run_dir / "result.json", "{}")
    atomic.write_text(root / "report.md", "r")
    (run_dir / "notes.txt").write_text("mine")        # a user's file inside a tool folder
    (root / "runs" / "train").mkdir()                  # a folder this root never made (e.g. `pna train`'s)
    atomic.write_text(root / "runs" / "train" / "best.pt", "weights")
    (root / "keep.md").write_text("mine")
    removed = atomic.remove_written(root)
    assert sorted(p.name for p in removed) == ["report.md", "result.json"]
    assert (run_dir / "notes.txt").read_text() == "mine" and (root / "keep.md").exists()
    assert (root / "runs" / "train" / "best.pt").exists()


def test_cut_jsonl_means_not_finished(tmp_path):
    job = _echo_job("j", i=1)
    run_dir = tmp_path / job.dir_name
    atomic.write_json(run_dir / runner.RESULT_FILE, {"key": job.key, "result": {"ok": 1}})
    atomic.write_text(run_dir / "train" / "metrics.jsonl", '{"epoch": 1}\n{"epoch": 2}\n')
    assert runner.finished_result(run_dir, job) == {"ok": 1}
    (run_dir / "train" / "metrics.jsonl").write_text('{"epoch": 1}\n{"epo')
    assert runner.finished_result(run_dir, job) is None
    assert runner.finished_result(run_dir, _echo_job("j", i=2)) is None  # another config's result


def test_check_out_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="^--out: .* names a file"):
        runner.check_out_dir(tmp_path / "file")
    with pytest.raises(ValueError, match="^--out: .* lies under the file"):
        runner.check_out_dir(tmp_path / "file" / "sub")
    assert runner.check_out_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_check_out_dir_unwritable(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    with pytest.raises(ValueError, match="^--out: cannot write in"):
        runner.check_out_dir(locked / "x")


SLOW_JOB = """
import os, time
def work(config, run_dir, options):
    (run_dir / "pid").write_text(str(os.getpid()))
    time.sleep(120)
    return {}
"""
PARENT = """
import sys
from pna import runner
jobs = [runner.Job(fn="slowjob:work", label=f"j{i}", config={"i": i}) for i in range(2)]
runner.run_jobs(jobs, sys.argv[1], workers=2)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_parent_ends_the_workers(tmp_path):
    (tmp_path / "slowjob.py").write_text(SLOW_JOB)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", ""),
                                                         str(Path(__file__).resolve().parent.parent)])}
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(PARENT), str(tmp_path / "jobs")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list((tmp_path / "jobs").glob("*/pid"))) < 2:
            assert parent.poll() is None and time.monotonic() < deadline, "workers did not start"
            time.sleep(0.2)
        pids = [int(p.read_text()) for p in (tmp_path / "jobs").glob("*/pid")]
        assert all(_alive(pid) for pid in pids)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids)


SWEEP = ["sweep", "--tiny", "--alphas", "0", "--betas", "0.1", "--seeds", "0", "--n-train", "32", "--max-epochs", "1",
         "--n-test", "8"]


def _cell_runs(out: Path) -> list[dict]:
    cell = json.loads((out / "cells" / "a0_b0.1.json").read_text())
    return [json.loads((out / run / runner.RUN_FILE).read_text())["config"]["config"]["train"] for run in cell["runs"]]


def test_sweep_rerun_with_other_settings_never_reuses_old_cells(tmp_path, capsys):
    from pna.cli import main
    out = tmp_path / "S"
    assert main(SWEEP + ["--out", str(out)]) == 0
    assert [c["arch"] for c in _cell_runs(out)] == ["ssm"]
    assert main(SWEEP + ["--arch", "transformer", "--out", str(out)]) == 0
    assert [(c["arch"], c["max_epochs"]) for c in _cell_runs(out)] == [("transformer", 1)]
    assert json.loads((out / "sweep.json").read_text())["settings"]["arch"] == "transformer"
    assert main(SWEEP + ["--arch", "transformer", "--max-epochs", "2", "--out", str(out)]) == 0
    assert [(c["arch"], c["max_epochs"]) for c in _cell_runs(out)] == [("transformer", 2)]
    assert len(list((out / "runs").iterdir())) - 1 == 3  # three runs (and the manifest), none reused
    # --force removes what the sweeps wrote, and nothing of the user's
    (out / "runs" / "mine.txt").write_text("mine")
    (out / "notes.md").write_text("mine")
    capsys.readouterr()
    assert main(SWEEP + ["--task", "sorting", "--out", str(out), "--force"]) == 0
    assert (out / "runs" / "mine.txt").exists() and (out / "notes.md").exists()
    assert [c["task"] for c in _cell_runs(out)] == ["sorting"]
    assert len([p for p in (out / "runs").iterdir() if p.is_dir()]) == 1


def _sample_copy(rng, split, max_digits=3):
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, max_digits)))
    return f"<BOS>Input:{digits} Result:{digits}<HALT><EOS>", {"kind": "copy"}


def test_a_registered_task_trains_end_to_end(tmp_path):
    """A new task is one registration (in its own file of pna.tasks): splits, MAX_LEN and training follow."""
    from pna.tasks import MAX_LEN, make_split, registry
    from pna.train import TrainConfig, train
    registry.register(registry.TaskSpec(name="copy_digits", sample=_sample_copy, max_len=24,
                                        defaults=lambda split: {"max_digits": 3}))
    assert MAX_LEN["copy_digits"] == 24
    assert [e.text for e in make_split("copy_digits", "val", n=3)] == [e.text for e in make_split("copy_digits", "val", n=3)]
    with pytest.raises(ValueError, match="^task_kwargs:"):
        make_split("copy_digits", "val", n=3, max_bits=4)
    result = train(TrainConfig(task="copy_digits", tiny=True, n_train=16, n_val=8, max_epochs=1, quiet=True,
                               out_dir=str(tmp_path)))
    assert result.history[0]["epoch"] == 1
    with pytest.raises(ValueError, match="^name:"):
        registry.register(registry.TaskSpec(name="copy_digits", sample=_sample_copy, max_len=32))
