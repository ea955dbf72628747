"""Training: AdamW with warmup + cosine, gradient clipping, early stopping, seeded everything, JSONL metrics,
checkpoints that resume exactly, bf16 autocast on CUDA and distributed data parallel under torchrun.

    cfg = TrainConfig(task="parity", arch="ssm", alpha=0.05, beta=0.1, seed=0, out_dir="runs/x")
    result = train(cfg)                 # result.best_checkpoint, result.history, result.best_val
    model, cfg = load_checkpoint(result.best_checkpoint)

Files in out_dir: config.json, metrics.jsonl (one line per epoch), last.pt (everything needed to resume),
best.pt (the weights with the lowest validation loss, and the config).
"""
from __future__ import annotations

import json
import math
import os
import random
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from pna.loss import LOSS_MODES, thermodynamic_loss
from pna.models import ARCHS, VARIANTS, build_model
from pna.tasks import MAX_LEN, TASKS, make_loader, make_split
from pna.tokenizer import TOKENIZER

# Model sizes of --tiny runs (smoke tests and the CPU-sized reproduction).
TINY_MODEL = {
    "ssm": {"d_model": 64, "n_layers": 2, "d_state": 16},
    "transformer": {"d_model": 64, "n_layers": 2, "n_heads": 4},
}


@dataclass
class TrainConfig:
    """Everything one training run depends on (paper defaults). model: overrides of the model config;
    task_kwargs: generator options of the train and val splits (e.g. {"parity_share": 1.0, "max_bits": 4});
    stop_after_epoch: end this invocation after that epoch (a later call with the same out_dir resumes)."""

    task: str = "parity"
    arch: str = "ssm"
    variant: str = "default"
    alpha: float = 0.05
    beta: float = 0.1
    gamma: float = 0.0
    loss_mode: str = "corrected"
    seed: int = 0
    lr: float = 3e-4
    weight_decay: float = 0.01
    batch_size: int = 32
    max_epochs: int = 50
    warmup_steps: int = 100
    grad_clip: float = 1.0
    patience: int = 10
    n_train: int | None = None
    n_val: int | None = None
    device: str = "auto"
    bf16: bool = True
    out_dir: str = "runs/train"
    tiny: bool = False
    model: dict[str, Any] = field(default_factory=dict)
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    stop_after_epoch: int | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        choices = {"task": TASKS, "arch": ARCHS, "variant": VARIANTS, "loss_mode": LOSS_MODES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {getattr(self, name)!r}")
        for name in ("alpha", "beta", "gamma", "weight_decay", "grad_clip"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: expected a non-negative number, got {getattr(self, name)}")
        for name in ("batch_size", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr: expected a positive number, got {self.lr}")
        if self.arch == "transformer" and self.variant != "default":
            raise ValueError("variant: the Transformer has only the 'default' variant")

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        """Read a JSON or TOML file of TrainConfig fields; keyword overrides win over the file."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"config: unknown fields {sorted(unknown)} in {path}")
        return cls(**{**data, **overrides})

    def model_overrides(self) -> dict[str, Any]:
        """Model config overrides: the tiny sizes if tiny, then `model`."""
        return {**(TINY_MODEL[self.arch] if self.tiny else {}), **self.model}


@dataclass
class TrainResult:
    """What train() returns: the best checkpoint, one metrics dict per epoch, the best validation metrics and
    the trained model (with the best weights loaded)."""

    best_checkpoint: Path
    history: list[dict[str, float]]
    best_val: dict[str, float]
    model: nn.Module


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available")
    return torch.device(device)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warmup over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _prediction_counts(logits: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-batch counts: trace tokens (targets after the input segment, the predictable part) right / scored,
    examples whose every answer token is right, halt decisions right at positions labelled 0 or 1."""
    ids, targets = batch["input_ids"], batch["targets"]
    pred = logits.argmax(-1)
    positions = torch.arange(ids.shape[1], device=ids.device)
    space = TOKENIZER.encode(" ")[0]
    after_input = torch.where(ids == space, positions, ids.shape[1]).min(dim=1).values  # first space
    scored = (targets != -100) & (positions[None] >= after_input[:, None])
    correct = (pred == targets) & scored
    answer = (positions[None] >= batch["result_pos"][:, None]) & (targets != -100)
    answer &= torch.cumsum((ids == TOKENIZER.halt_id).long(), dim=1) == 0  # up to the token before HALT
    answer_ok = ((pred == targets) | ~answer).all(dim=1)
    return {"trace_correct": correct.sum(), "trace_total": scored.sum(), "answer_correct": answer_ok.sum(),
            "examples": torch.tensor(ids.shape[0], device=ids.device)}


def _halt_counts(halt_logits: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    labels, mask = batch["halt_labels"], batch["halt_mask"]
    decided = mask & ((labels == 0) | (labels == 1))
    right = ((halt_logits > 0) == (labels == 1)) & decided
    return {"halt_correct": right.sum(), "halt_total": decided.sum()}


@torch.no_grad()
def evaluate_loss(model: nn.Module, loader, cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """Mean loss parts (weighted by batch) and accuracies over a loader."""
    model.eval()
    sums: dict[str, float] = {}
    batches = 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with _autocast(cfg, device):
            out = model(batch["input_ids"])
        _, parts = thermodynamic_loss(out.logits, out.halt_logits, out.entropy, batch, cfg.alpha, cfg.beta,
                                      cfg.gamma, cfg.loss_mode)
        counts = {**_prediction_counts(out.logits, batch), **_halt_counts(out.halt_logits, batch)}
        for k, v in {**parts, **{k: float(c) for k, c in counts.items()}}.items():
            sums[k] = sums.get(k, 0.0) + v
        batches += 1
    metrics = {f"loss_{k}": sums[k] / batches for k in ("total", "ce", "energy", "bce", "entropy")}
    metrics["trace_accuracy"] = sums["trace_correct"] / max(1.0, sums["trace_total"])
    metrics["answer_accuracy"] = sums["answer_correct"] / max(1.0, sums["examples"])
    metrics["halt_accuracy"] = sums["halt_correct"] / max(1.0, sums["halt_total"])
    return metrics


def _autocast(cfg: TrainConfig, device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")


def _distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun (initialising the process group once), else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def _run_defining(config: dict[str, Any]) -> dict[str, Any]:
    """The config fields a resumed run must share with the run it continues (not where or how verbosely)."""
    return {k: v for k, v in config.items() if k not in ("stop_after_epoch", "quiet", "device")}


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """The model (eval mode, on `device`) and the config of a best.pt or last.pt checkpoint."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = TrainConfig(**state["config"])
    model = build_model(cfg.arch, TOKENIZER.vocab_size, cfg.variant, **cfg.model_overrides())
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def train(cfg: TrainConfig) -> TrainResult:
    """Train one model (resuming from out_dir/last.pt if it is there) and return the best checkpoint."""
    rank, world = _distributed()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    out = Path(cfg.out_dir)
    seed_everything(cfg.seed)
    max_len = MAX_LEN[cfg.task]
    train_examples = make_split(cfg.task, "train", n=cfg.n_train, **cfg.task_kwargs)
    val_examples = make_split(cfg.task, "val", n=cfg.n_val, **cfg.task_kwargs)
    val_loader = make_loader(val_examples, cfg.batch_size, False, cfg.seed, max_len)
    model = build_model(cfg.arch, TOKENIZER.vocab_size, cfg.variant, **cfg.model_overrides()).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_examples) / (cfg.batch_size * world))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.max_epochs * steps_per_epoch)
    )
    progress = {"epoch": 0, "best_loss": math.inf, "best_val": {}, "stale": 0, "history": []}
    last_path, best_path = out / "last.pt", out / "best.pt"
    if last_path.exists():
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        if _run_defining(state["config"]) != _run_defining(asdict(cfg)):
            raise ValueError(f"out_dir: {out} holds a run with another config; use a new out_dir")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        progress = state["progress"]
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
    ddp_model = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2), encoding="utf-8")
    show = rank == 0 and not cfg.quiet
    while progress["epoch"] < cfg.max_epochs and progress["stale"] < cfg.patience:
        epoch = progress["epoch"] + 1
        # The data order depends only on (seed, epoch), so a resumed run sees the batches it would have seen.
        loader = make_loader(train_examples, cfg.batch_size, True, cfg.seed * 100_003 + epoch, max_len,
                             distributed=world > 1)
        if world > 1:
            loader.sampler.set_epoch(epoch)
        ddp_model.train()
        bar = tqdm(loader, desc=f"{cfg.arch} {cfg.task} epoch {epoch}", disable=not show, leave=False)
        train_sum, n_batches = 0.0, 0
        for batch in bar:
            batch = {k: v.to(device) for k, v in batch.items()}
            with _autocast(cfg, device):
                output = ddp_model(batch["input_ids"])
            loss, parts = thermodynamic_loss(output.logits, output.halt_logits, output.entropy, batch, cfg.alpha,
                                             cfg.beta, cfg.gamma, cfg.loss_mode)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            train_sum += parts["total"]
            n_batches += 1
            bar.set_postfix(loss=f"{parts['total']:.3f}")
        metrics = {"epoch": epoch, "train_loss": train_sum / max(1, n_batches), "lr": scheduler.get_last_lr()[0],
                   **{f"val_{k}": v for k, v in evaluate_loss(model, val_loader, cfg, device).items()}}
        progress["history"].append(metrics)
        progress["epoch"] = epoch
        improved = metrics["val_loss_total"] < progress["best_loss"]
        if improved:
            progress.update(best_loss=metrics["val_loss_total"], best_val=metrics, stale=0)
        else:
            progress["stale"] += 1
        if rank == 0:
            with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")
            if improved:
                torch.save({"model": model.state_dict(), "config": asdict(cfg), "metrics": metrics}, best_path)
            torch.save({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "config": asdict(cfg), "progress": progress,
                "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
            }, last_path)
            if show:
                tqdm.write(f"epoch {epoch}: train {metrics['train_loss']:.4f}  val {metrics['val_loss_total']:.4f}  "
                           f"trace acc {metrics['val_trace_accuracy']:.3f}  answer acc "
                           f"{metrics['val_answer_accuracy']:.3f}")
        if cfg.stop_after_epoch is not None and epoch >= cfg.stop_after_epoch:
            break
    if world > 1:
        dist.barrier()
    best = torch.load(best_path, map_location="cpu", weights_only=False)
    model.load_state_dict(best["model"])
    return TrainResult(best_path, progress["history"], progress["best_val"], model)
