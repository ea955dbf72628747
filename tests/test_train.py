"""Training: a tiny SSM learns parity, resuming is exact, DDP ranks stay in sync, the CLI and its errors."""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from pna.cli import main
from pna.train import TrainConfig, load_checkpoint, train, warmup_cosine

PURE_PARITY = {"parity_share": 1.0, "max_bits": 6}


def tiny_cfg(out, **kw) -> TrainConfig:
    base = dict(task="parity", arch="ssm", tiny=True, n_train=256, n_val=64, max_epochs=2, warmup_steps=4,
                lr=3e-3, out_dir=str(out), quiet=True, task_kwargs=PURE_PARITY)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_ssm_learns_parity(tmp_path, seed):
    """Trace tokens after the input (the predictable part, including the answer) reach > 95% accuracy."""
    result = train(tiny_cfg(tmp_path, n_train=1500, n_val=200, max_epochs=4, warmup_steps=20, seed=seed))
    assert result.best_val["val_trace_accuracy"] > 0.95, result.history
    assert result.best_val["val_answer_accuracy"] > 0.9, result.history
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_resume_is_exact(tmp_path):
    straight = train(tiny_cfg(tmp_path / "a"))
    first = train(tiny_cfg(tmp_path / "b", stop_after_epoch=1))
    assert len(first.history) == 1
    resumed = train(tiny_cfg(tmp_path / "b"))
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    model, cfg = load_checkpoint(tmp_path / "b" / "last.pt")
    assert cfg.max_epochs == 2 and model.cfg.d_model == 64


def test_resume_refuses_another_config(tmp_path):
    train(tiny_cfg(tmp_path, stop_after_epoch=1))
    with pytest.raises(ValueError, match="^out_dir:"):
        train(tiny_cfg(tmp_path, alpha=0.5))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = train(tiny_cfg(out, n_train=128, n_val=32, max_epochs=1, device="cpu"))
    torch.save(result.model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_ddp_two_cpu_processes_stay_in_sync(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1  # rank 0 alone writes


def test_warmup_cosine():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.0)


def test_cli_train_with_config_file(tmp_path, capsys):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"task": "parity", "arch": "transformer", "n_train": 64, "n_val": 16,
                                  "max_epochs": 3, "seed": 5}))
    assert main(["train", "--config", str(config), "--tiny", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "run")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["config"]["arch"] == "transformer" and printed["config"]["seed"] == 5
    assert printed["config"]["max_epochs"] == 1  # the flag overrides the file
    assert (tmp_path / "run" / "best.pt").exists()


@pytest.mark.parametrize("argv,message", [
    (["train", "--task", "chess"], "invalid choice"),
    (["train", "--alpha", "x"], "invalid float value"),
    (["train", "--alpha", "-1", "--tiny"], "alpha: expected a non-negative number"),
])
def test_cli_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_config_values():
    with pytest.raises(ValueError, match="^arch:"):
        TrainConfig(arch="rnn")
    with pytest.raises(ValueError, match="^lr:"):
        TrainConfig(lr=0)
