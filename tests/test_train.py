"""Training: a tiny SSM learns parity, resuming is exact, DDP ranks stay in sync, the CLI and its errors."""
from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from pna import checkpoint
from pna.cli import main
from pna.models import build_model
from pna.tokenizer import TOKENIZER
from pna.train import TINY_MODEL, TrainConfig, load_checkpoint, seed_everything, train, warmup_cosine

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SMALL_PARITY = {"parity_share": 1.0, "max_bits": 4}  # pure parity, 2-4 bits


def tiny_cfg(out, **kw) -> TrainConfig:
    base = dict(task="parity", arch="ssm", tiny=True, n_train=256, n_val=64, max_epochs=2, warmup_steps=4,
                lr=3e-3, out_dir=str(out), quiet=True, task_kwargs=SMALL_PARITY)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_ssm_learns_parity(tmp_path, seed):
    """After 2 epochs over 1000 examples, the tokens after the input (trace, answer, HALT, EOS: everything the
    input determines) are > 95% right, and so are whole answers."""
    result = train(tiny_cfg(tmp_path, n_train=1000, n_val=200, warmup_steps=10, lr=1e-2, seed=seed))
    best = result.best_val
    assert best["val_trace_accuracy"] > 0.95, result.history
    assert best["val_answer_accuracy"] > 0.95, result.history
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == result.history
    assert [h["epoch"] for h in result.history] == [1, 2]


def test_resume_is_exact(tmp_path):
    """2 epochs in one go == 1 epoch, then a second call that resumes from last.pt: bitwise equal weights."""
    straight = train(tiny_cfg(tmp_path / "a"))
    first = train(tiny_cfg(tmp_path / "b", stop_after_epoch=1))
    assert [h["epoch"] for h in first.history] == [1]
    resumed = train(tiny_cfg(tmp_path / "b"))
    assert resumed.history == straight.history
    final_a, final_b = (checkpoint.load(tmp_path / run / "last.pt")["model"] for run in ("a", "b"))
    assert final_a.keys() == final_b.keys()
    for name in final_a:
        assert torch.equal(final_a[name], final_b[name]), name
    model, cfg = load_checkpoint(tmp_path / "b" / "best.pt")
    assert cfg.max_epochs == 2 and model.cfg.d_model == 64
    for name, value in model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    again = train(tiny_cfg(tmp_path / "b"))  # a finished run returns at once with the same result
    assert again.history == resumed.history
    assert train(tiny_cfg(tmp_path / "b", stop_after_epoch=1)).history == resumed.history  # nothing past epoch 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("arch,variant", [("ssm", "default"), ("ssm", "faithful"), ("transformer", "default")])
def test_cuda_bf16_training_runs_and_resumes(tmp_path, arch, variant):
    first = train(tiny_cfg(tmp_path, arch=arch, variant=variant, device="cuda", bf16=True, stop_after_epoch=1))
    resumed = train(tiny_cfg(tmp_path, arch=arch, variant=variant, device="cuda", bf16=True))
    assert resumed.history[0] == first.history[0] and len(resumed.history) == 2
    assert all(math.isfinite(h["val_loss_total"]) for h in resumed.history)
    assert next(resumed.model.parameters()).device.type == "cuda"


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
    # Each rank's own weights (held in memory, not read back from rank 0's best.pt).
    torch.save(result.model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_ddp_two_cpu_processes_stay_in_sync(tmp_path):
    """Two gloo processes train on different shards; averaged gradients keep their weights identical."""
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    seed_everything(0)  # what train() does before it builds the model
    initial = build_model("ssm", TOKENIZER.vocab_size, **TINY_MODEL["ssm"]).state_dict()
    assert any(not torch.equal(a[name], initial[name]) for name in a)  # the ranks did train
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


@pytest.mark.parametrize("path", sorted(CONFIGS.iterdir()), ids=lambda p: p.name)
def test_example_configs_parse(path):
    cfg = TrainConfig.from_file(path)
    assert cfg.out_dir.startswith("runs/")


@pytest.mark.parametrize("argv,message", [
    (["train", "--task", "chess"], "invalid choice"),
    (["train", "--alpha", "x"], "invalid float value"),
    (["train", "--alpha", "-1"], "--alpha: expected a finite number >= 0"),
    (["train", "--lr", "nan"], "--lr: expected a finite number > 0"),
    (["train", "--epochs", "0"], "--epochs: expected an integer >= 1"),
    (["train", "--device", "gpu0"], "--device: expected 'auto'"),
    (["train", "--config", "no/such/file.toml"], "config: cannot read no/such/file.toml"),
])
def test_cli_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err  # one error line after the usage


def test_bad_config_values(tmp_path):
    with pytest.raises(ValueError, match="^arch:"):
        TrainConfig(arch="rnn")
    with pytest.raises(ValueError, match="^variant:"):
        TrainConfig(arch="transformer", variant="original")
    with pytest.raises(ValueError, match="^data_protocol:"):
        TrainConfig(data_protocol="original")
    with pytest.raises(ValueError, match="^n_train:"):
        TrainConfig(n_train=0)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"task": "parity", "alhpa": 0.1}))
    with pytest.raises(ValueError, match=r"^config: unknown fields \['alhpa'\]"):
        TrainConfig.from_file(bad)


def test_resume_from_another_spelling_and_directory(tmp_path, monkeypatch):
    """The out_dir is not part of a run's identity: m, ./m, its absolute path, a moved copy, all resume it."""
    monkeypatch.chdir(tmp_path)
    first = train(tiny_cfg("m", stop_after_epoch=1))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    resumed = train(tiny_cfg(str(tmp_path / "m")))
    assert resumed.history[:1] == first.history and len(resumed.history) == 2
    (tmp_path / "m").rename(tmp_path / "moved")
    again = train(tiny_cfg("../moved"))  # finished: returns at once, nothing retrained
    assert again.history == resumed.history


def test_cut_metrics_jsonl_is_rewritten_from_the_checkpoint(tmp_path):
    result = train(tiny_cfg(tmp_path, max_epochs=1))
    metrics = tmp_path / "metrics.jsonl"
    text = metrics.read_text()
    metrics.write_text(text[: len(text) // 2])  # cut mid-line, as a kill mid-write of a plain write would
    again = train(tiny_cfg(tmp_path, max_epochs=1))
    assert again.history == result.history
    assert metrics.read_text() == text


def test_early_stop_metric_and_optimizer_are_configurable(tmp_path):
    result = train(tiny_cfg(tmp_path, optimizer="adam", weight_decay=0.0, schedule="constant",
                            early_stop="val_token_accuracy", max_epochs=2))
    best = max(h["val_token_accuracy"] for h in result.history)
    assert result.best_val["val_token_accuracy"] == best
    with pytest.raises(ValueError, match="^early_stop:"):
        TrainConfig(early_stop="val_f1")
