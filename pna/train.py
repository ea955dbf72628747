"""Training: AdamW with warmup + cosine, gradient clipping, early stopping, seeded everything, JSONL metrics,
checkpoints that resume exactly, bf16 autocast on CUDA and distributed data parallel under torchrun.

    cfg = TrainConfig(task="parity", arch="ssm", alpha=0.05, beta=0.1, seed=0, out_dir="runs/x")
    result = train(cfg)                 # result.best_checkpoint, result.history, result.best_val, result.model
    model, cfg = load_checkpoint(result.best_checkpoint)

Files in out_dir: run.json (the run's identity: the hash of its run-defining config, see pna.runner),
config.json, metrics.jsonl (one line per epoch, rewritten atomically), last.pt (everything needed to resume),
best.pt (the weights of the best validation epoch by cfg.early_stop, and the config). Calling train() again
with the same config resumes from last.pt wherever out_dir is (or however it is spelled: the path is not part
of the identity); a finished run returns at once; another config in the same out_dir is refused with the
fields that differ. One process at a time may write an out_dir (a lock; a second one fails at once). Every
step checks the loss and the parameters: a run that diverges stops with TrainingDiverged naming lr.

Determinism: python, numpy and torch are seeded from cfg.seed before the model is built, the data order of an
epoch depends only on (seed, epoch), and last.pt holds every generator's state, so on a CPU a run interrupted
after any epoch and resumed ends with bitwise the same weights as an uninterrupted one. On the CPU, train() sets
torch.set_flush_denormal(True) for the process: once gradients get small, denormal arithmetic otherwise makes
training several times slower.

Distributed: under torchrun (WORLD_SIZE > 1) the process group is initialised here (nccl on CUDA, gloo on the
CPU) and left for the launcher's processes to end with; each rank trains on its DistributedSampler shard, every
rank evaluates the whole validation split and rank 0's metrics decide early stopping for all; only rank 0
writes files and prints. Resume a distributed run with the same number of processes.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pna import atomic, checkpoint, runner
from pna.loss import LOSS_MODES, thermodynamic_loss
from pna.masks import target_masks
from pna.models import ARCHS, VARIANTS, SSMConfig, TransformerConfig, build_model
from pna.tasks import MAX_LEN, ORIGINAL_MAX_LEN, PROTOCOLS, Example, make_loader, make_split
from pna.tasks import registry as task_registry
from pna.tokenizer import TOKENIZER

# Model sizes of --tiny runs (smoke tests and the CPU-sized reproduction).
TINY_MODEL = {
    "ssm": {"d_model": 64, "n_layers": 2, "d_state": 16},
    "transformer": {"d_model": 64, "n_layers": 2, "n_heads": 4},
}
# Split sizes of --tiny runs whose n_train / n_val are not given.
TINY_SPLITS = {"n_train": 512, "n_val": 128}
# Config fields a resumed run may change: where it runs and is stored, how verbosely, where this invocation stops.
NOT_RUN_DEFINING = ("device", "quiet", "stop_after_epoch", "out_dir")
OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("warmup_cosine", "constant")
# Early-stopping / best-checkpoint metrics: +1 higher is better, -1 lower is better.
EARLY_STOP = {"val_loss_total": -1, "val_loss_ce": -1, "val_token_accuracy": 1, "val_trace_accuracy": 1,
              "val_answer_accuracy": 1}
TRAIN_FN = "pna.train:train"
MODEL_CONFIGS = {"ssm": SSMConfig, "transformer": TransformerConfig}


class TrainingDiverged(ValueError):
    """The loss or the weights became non-finite during training."""


@dataclass
class TrainConfig:
    """Everything one training run depends on (defaults: the paper's recipe on the paper-sized models).

    model: overrides of the model config (see pna.models.build_model); tiny: the TINY_MODEL sizes (under
    `model`) and TINY_SPLITS where n_train / n_val are None; n_train / n_val: split sizes (None: the full 8000 /
    1000); task_kwargs: generator options of the train and val splits (e.g. {"parity_share": 1.0,
    "max_bits": 4}); device: "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...; bf16: autocast to
    bfloat16 on CUDA; stop_after_epoch: end this invocation after that epoch (a later call resumes);
    optimizer: "adamw" or "adam" (with weight_decay as its L2 term); schedule: "warmup_cosine" (linear warmup
    over warmup_steps, then cosine to 0 at the last epoch) or "constant" (lr throughout); early_stop: the validation metric of
    early stopping and of best.pt (see EARLY_STOP); init_from: identity (e.g. the run key) of the weights a
    fine-tuning run starts from, passed to train() as init_model; freeze_halt: freeze the halt head's
    parameters (every parameter whose name contains "halt"); data_protocol: "corrected" (our generators and
    layout) or "faithful" (the original's generators draw for draw, its layout of max_len - 1 positions with PAD
    labelled 1 and its padded lengths ORIGINAL_MAX_LEN, see pna.tasks), for the train and val splits and the
    test split a job evaluates on (see ``split`` and ``max_len``). With loss_mode "faithful" and early_stop
    "val_loss_total" this is the original's checkpoint rule: the lowest validation total of its own loss, i.e.
    CE + beta * BCE over all positions (plus the constant energy / entropy values).
    """

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
    optimizer: str = "adamw"
    schedule: str = "warmup_cosine"
    early_stop: str = "val_loss_total"
    init_from: str | None = None
    freeze_halt: bool = False
    data_protocol: str = "corrected"

    def __post_init__(self) -> None:
        for name in ("bf16", "tiny", "quiet", "freeze_halt"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        for name in ("device", "out_dir"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}: expected a string, got {getattr(self, name)!r}")
        if not (_is_int(self.seed) and 0 <= self.seed < 2**32):
            raise ValueError(f"seed: expected an integer in [0, 2**32 - 1], got {self.seed!r}")
        if self.init_from is not None and not isinstance(self.init_from, str):
            raise ValueError(f"init_from: expected a string or null, got {self.init_from!r}")
        for name in ("model", "task_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name}: expected a table / object of fields, got {getattr(self, name)!r}")
        choices = {"task": tuple(task_registry.REGISTRY), "arch": ARCHS, "variant": VARIANTS, "loss_mode": LOSS_MODES,
                   "optimizer": OPTIMIZERS, "schedule": SCHEDULES, "early_stop": tuple(EARLY_STOP),
                   "data_protocol": PROTOCOLS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {getattr(self, name)!r}")
        if self.data_protocol == "faithful" and self.task not in ORIGINAL_MAX_LEN:
            raise ValueError(f"data_protocol: the faithful data exists for {tuple(ORIGINAL_MAX_LEN)}, not "
                             f"{self.task!r}")
        for name in ("alpha", "beta", "gamma", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        if not (_is_number(self.lr) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: expected a finite number > 0, got {self.lr!r}")
        for name in ("batch_size", "max_epochs", "patience", "n_train", "n_val", "stop_after_epoch"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and value >= 1):
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if not (_is_int(self.warmup_steps) and self.warmup_steps >= 0):
            raise ValueError(f"warmup_steps: expected an integer >= 0, got {self.warmup_steps!r}")
        if self.device != "auto":
            try:
                kind = torch.device(self.device).type
            except (RuntimeError, TypeError):
                kind = None
            if kind not in ("cpu", "cuda"):
                raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {self.device!r}")
        _check_model_overrides(self.arch, self.model_overrides())

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        """Read a JSON or TOML (.toml) file of TrainConfig fields; keyword overrides win over the file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"config: cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"config: {path} must hold a table / object of TrainConfig fields")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"config: unknown fields {sorted(unknown)} in {path}")
        return cls(**{**data, **overrides})

    def identity(self) -> dict[str, Any]:
        """The run-defining fields (everything but NOT_RUN_DEFINING): what a resumed run must share."""
        return {k: v for k, v in asdict(self).items() if k not in NOT_RUN_DEFINING}

    def model_overrides(self) -> dict[str, Any]:
        """Model config overrides: the tiny sizes if tiny, then `model`."""
        return {**(TINY_MODEL[self.arch] if self.tiny else {}), **self.model}

    def max_len(self) -> int:
        """Padded length of the task's examples under data_protocol (MAX_LEN, or the original's ORIGINAL_MAX_LEN;
        the faithful layout feeds the model max_len - 1 positions)."""
        return (ORIGINAL_MAX_LEN if self.data_protocol == "faithful" else MAX_LEN)[self.task]

    def split(self, split: str, n: int | None = None) -> list[Example]:
        """n examples of a split of the task under data_protocol; train and val take task_kwargs, test does not."""
        kwargs = {} if split == "test" else dict(self.task_kwargs)
        if self.data_protocol != "corrected":  # registered tasks (pna.tasks.registry) know no protocol
            kwargs["protocol"] = self.data_protocol
        return make_split(self.task, split, n=n, **kwargs)

    def loader(self, examples: list[Example], shuffle: bool, seed: int, distributed: bool = False) -> DataLoader:
        """Batches of examples in data_protocol's layout at max_len (pna.tasks.make_loader)."""
        return make_loader(examples, self.batch_size, shuffle, seed, self.max_len(), distributed=distributed,
                           protocol=self.data_protocol)

    def split_sizes(self) -> tuple[int | None, int | None]:
        """(n_train, n_val) to draw: as given, else TINY_SPLITS when tiny, else None (the full splits)."""
        if not self.tiny:
            return self.n_train, self.n_val
        return (TINY_SPLITS["n_train"] if self.n_train is None else self.n_train,
                TINY_SPLITS["n_val"] if self.n_val is None else self.n_val)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_model_overrides(arch: str, overrides: dict[str, Any]) -> None:
    """ValueError naming model.<field> for an unknown field or a value of the wrong kind (sizes are integers
    >= 1, or >= 0 where the default is 0, flags booleans), before any model is built."""
    config_fields = {f.name: f.default for f in fields(MODEL_CONFIGS[arch]) if f.default is not MISSING}
    for name, value in overrides.items():
        if name not in config_fields or name in ("vocab_size", "faithful"):
            raise ValueError(f"model: {name!r} is not a {MODEL_CONFIGS[arch].__name__} field")
        default = config_fields[name]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"model.{name}: expected true or false, got {value!r}")
        elif _is_int(default):
            if not (_is_int(value) and value >= min(1, default)):
                raise ValueError(f"model.{name}: expected an integer >= {min(1, default)}, got {value!r}")
        elif isinstance(default, float) and not (_is_number(value) and math.isfinite(value) and value >= 0):
            raise ValueError(f"model.{name}: expected a finite number >= 0, got {value!r}")


@dataclass
class TrainResult:
    """What train() returns: best.pt's path, one metrics dict per epoch (train_loss, lr and the val_* metrics of
    evaluate_metrics), the best epoch's metrics and the model holding the best epoch's weights."""

    best_checkpoint: Path
    history: list[dict[str, float]]
    best_val: dict[str, float]
    model: nn.Module


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; anything else as given (ValueError if it is CUDA and there is none)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available")
    return torch.device(device)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor of optimizer step `step`: linear warmup over `warmup` steps, then cosine decay to 0
    at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _batch_counts(logits: Tensor, halt_logits: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Counts of one batch behind evaluate_metrics' accuracies (see there)."""
    ids, targets = batch["input_ids"], batch["targets"]
    hit = logits.argmax(-1) == targets
    masks = target_masks(ids, targets, batch["result_pos"])
    scored, trace = masks.scored, masks.trace
    labels, mask = batch["halt_labels"], batch["halt_mask"]
    decided = mask & ((labels == 0) | (labels == 1))
    says_halt, should_halt = halt_logits > 0, labels == 1
    return {
        "token_correct": (hit & scored).sum(), "token_total": scored.sum(),
        "trace_correct": (hit & trace).sum(), "trace_total": trace.sum(),
        "answer_correct": masks.answer_correct(hit).sum(), "examples": torch.tensor(ids.shape[0]),
        "halt_correct": ((says_halt == should_halt) & decided).sum(), "halt_total": decided.sum(),
        "halt_tp": (says_halt & should_halt & decided).sum(),
        "halt_fp": (says_halt & ~should_halt & decided).sum(),
        "halt_fn": (~says_halt & should_halt & decided).sum(),
    }


@torch.no_grad()
def evaluate_metrics(model: nn.Module, loader: DataLoader, cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """Teacher-forced metrics of a model over a loader.

    loss_total / loss_ce / loss_energy / loss_bce / loss_entropy: thermodynamic_loss parts, mean over batches;
    token_accuracy: next-token hits over every target; trace_accuracy: over the targets after the input (from the
    first space on: the trace, "Result:", the answer, HALT, EOS; everything there follows from the input);
    answer_accuracy: examples whose every answer token is right; halt_accuracy and halt_f1: halt logit > 0 against
    the halt labels at the positions labelled 0 or 1 inside halt_mask (the 0.5 positions are left out).
    """
    model.eval()
    sums: dict[str, float] = {}
    batches = 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with _autocast(cfg, device):
            out = model(batch["input_ids"])
        _, parts = thermodynamic_loss(out.logits, out.halt_logits, out.entropy, batch, cfg.alpha, cfg.beta,
                                      cfg.gamma, cfg.loss_mode)
        counts = _batch_counts(out.logits, out.halt_logits, batch)
        for k, v in {**parts, **{k: float(c) for k, c in counts.items()}}.items():
            sums[k] = sums.get(k, 0.0) + v
        batches += 1
    metrics = {f"loss_{k}": sums[k] / batches for k in ("total", "ce", "energy", "bce", "entropy")}
    for name in ("token", "trace", "halt"):
        metrics[f"{name}_accuracy"] = sums[f"{name}_correct"] / max(1.0, sums[f"{name}_total"])
    metrics["answer_accuracy"] = sums["answer_correct"] / max(1.0, sums["examples"])
    metrics["halt_f1"] = 2 * sums["halt_tp"] / max(1.0, 2 * sums["halt_tp"] + sums["halt_fp"] + sums["halt_fn"])
    return metrics


def _autocast(cfg: TrainConfig, device: torch.device) -> torch.autocast:
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")


def _distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun (initialising the process group once), else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def _epoch_loader(cfg: TrainConfig, examples: list[Example], epoch: int, world: int) -> DataLoader:
    """The training batches of one epoch; their order depends only on (seed, epoch)."""
    loader = cfg.loader(examples, True, cfg.seed * 100_003 + epoch, distributed=world > 1)
    if world > 1:
        loader.sampler.set_epoch(epoch)
    return loader


@contextlib.contextmanager
def _nonfinite_is_divergence(epoch: int, step: int | str) -> Any:
    """Turn the op's "contains NaN or Inf" ValueError inside a forward pass into TrainingDiverged: the input ids
    are finite, so non-finite values inside the model come from its weights (e.g. A = -exp(A_log) overflowing
    for huge but finite parameters)."""
    try:
        yield
    except ValueError as exc:
        if "NaN or Inf" in str(exc):
            raise _diverged(epoch, step, f"non-finite values inside the model: {exc}") from None
        raise


def _diverged(epoch: int, step: int | str, what: str) -> TrainingDiverged:
    where = f"step {step}" if isinstance(step, int) else step
    return TrainingDiverged(f"lr: training diverged in epoch {epoch}, {where} ({what}); try a lower lr")


def _check_finite(epoch: int, metrics: dict[str, float]) -> None:
    bad = [k for k in ("train_loss", "val_loss_total") if not math.isfinite(metrics[k])]
    if bad:
        raise _diverged(epoch, 0, f"{', '.join(bad)} not finite")


def _params_finite(params: list[Tensor]) -> bool:
    """Whether every parameter is finite (one device sync)."""
    return bool(torch.stack([torch.isfinite(p).all() for p in params]).all())


def freeze_halt_head(model: nn.Module) -> list[str]:
    """Set requires_grad=False on every parameter whose name contains "halt"; returns their names.

    Raises ValueError if the model has no such parameter (nothing would be frozen).
    """
    frozen = [name for name, p in model.named_parameters() if "halt" in name]
    if not frozen:
        raise ValueError("model: no parameter name contains 'halt'; cannot freeze a halt head")
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    return frozen


def _write_metrics(out: Path, history: list[dict[str, float]]) -> None:
    """metrics.jsonl from the history (atomically), unless it already holds exactly that."""
    text = "".join(json.dumps(m) + "\n" for m in history)
    path = out / "metrics.jsonl"
    if not path.exists() or path.read_text(encoding="utf-8", errors="replace") != text:
        atomic.write_text(path, text)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """The model (eval mode, on `device`) and the config of a best.pt or last.pt checkpoint."""
    state = checkpoint.load(path, arg="checkpoint")
    cfg = TrainConfig(**state["config"])
    model = build_model(cfg.arch, TOKENIZER.vocab_size, cfg.variant, **cfg.model_overrides())
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def train(cfg: TrainConfig, init_model: nn.Module | None = None) -> TrainResult:
    """Train one model (resuming from out_dir/last.pt if it is there); see the module docstring.

    init_model: the starting model of a fine-tuning run (cfg.init_from names its weights; its frozen
    parameters stay frozen); None builds a fresh model from cfg.
    """
    if (init_model is None) != (cfg.init_from is None):
        raise ValueError("init_from: give init_model exactly when cfg.init_from names its weights")
    rank, world = _distributed()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    out = Path(cfg.out_dir)
    if rank == 0:
        runner.check_out_dir(out, "out_dir")
    with contextlib.ExitStack() as stack:
        if rank == 0:
            stack.enter_context(runner.RunLock(out))
            runner.check_identity(out, TRAIN_FN, cfg.identity(), arg="out_dir")
        return _train_locked(cfg, init_model, out, rank, world, device)


def _train_locked(cfg: TrainConfig, init_model: nn.Module | None, out: Path, rank: int, world: int,
                  device: torch.device) -> TrainResult:
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    last_path, best_path = out / "last.pt", out / "best.pt"
    state = best_state = None
    if last_path.exists():  # read (and vetted) before any work
        state = checkpoint.load(last_path, arg="out_dir")
        changes = runner.config_diff(TrainConfig(**state["config"]).identity(), cfg.identity())
        if changes:
            raise ValueError(f"out_dir: {out} holds a run with another config ({'; '.join(changes)}); use another "
                             "folder or --force")
        best_state = checkpoint.load(best_path, arg="out_dir")["model"]
    seed_everything(cfg.seed)
    n_train, n_val = cfg.split_sizes()
    train_examples = cfg.split("train", n_train)
    val_loader = cfg.loader(cfg.split("val", n_val), False, cfg.seed)
    if init_model is None:
        model = build_model(cfg.arch, TOKENIZER.vocab_size, cfg.variant, **cfg.model_overrides())
    else:
        model = init_model
    model = model.to(device)
    if cfg.freeze_halt:
        freeze_halt_head(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.max_epochs * len(_epoch_loader(cfg, train_examples, 1, world))
    if cfg.schedule == "constant":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                      lambda s: warmup_cosine(s, cfg.warmup_steps, total_steps))
    progress: dict[str, Any] = {"epoch": 0, "best_score": -math.inf, "best_val": {}, "stale": 0, "history": []}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        progress = state["progress"]
        checkpoint.restore_rng(state["rng"])
    ddp_model = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if rank == 0:
        runner.write_identity(out, TRAIN_FN, cfg.identity())
        atomic.write_json(out / "config.json", asdict(cfg))
        if progress["history"]:
            _write_metrics(out, progress["history"])  # repairs a cut metrics.jsonl of a resumed / finished run
    show = rank == 0 and not cfg.quiet
    sign = EARLY_STOP[cfg.early_stop]
    last_epoch = cfg.max_epochs if cfg.stop_after_epoch is None else min(cfg.max_epochs, cfg.stop_after_epoch)
    while progress["epoch"] < last_epoch and progress["stale"] < cfg.patience:
        epoch = progress["epoch"] + 1
        ddp_model.train()
        bar = tqdm(_epoch_loader(cfg, train_examples, epoch, world), desc=f"{cfg.arch} {cfg.task} epoch {epoch}",
                   disable=None if show else True, leave=False)  # None: off when stderr is not a terminal
        loss_sum = torch.zeros(2, dtype=torch.float64, device=device)  # sum of batch losses, number of batches
        for step, batch in enumerate(bar, start=1):
            batch = {k: v.to(device) for k, v in batch.items()}
            with _autocast(cfg, device), _nonfinite_is_divergence(epoch, step):
                output = ddp_model(batch["input_ids"])
            loss, parts = thermodynamic_loss(output.logits, output.halt_logits, output.entropy, batch, cfg.alpha,
                                             cfg.beta, cfg.gamma, cfg.loss_mode)
            if not math.isfinite(parts["total"]):
                raise _diverged(epoch, step, f"loss {parts['total']}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            if not _params_finite(params):
                raise _diverged(epoch, step, "non-finite parameters after the update")
            loss_sum += torch.tensor([parts["total"], 1.0], dtype=torch.float64, device=device)
            bar.set_postfix(loss=f"{parts['total']:.3f}")
        if world > 1:
            dist.all_reduce(loss_sum)
        with _nonfinite_is_divergence(epoch, "validation"):
            val = [evaluate_metrics(model, val_loader, cfg, device)]
        if world > 1:  # rank 0's numbers decide for everyone, so no rank can stop while another goes on
            dist.broadcast_object_list(val, src=0)
        metrics = {"epoch": epoch, "train_loss": float(loss_sum[0] / loss_sum[1].clamp_min(1)),
                   "lr": scheduler.get_last_lr()[0], **{f"val_{k}": v for k, v in val[0].items()}}
        _check_finite(epoch, metrics)
        progress["history"].append(metrics)
        progress["epoch"] = epoch
        improved = sign * metrics[cfg.early_stop] > progress["best_score"]
        if improved:
            progress.update(best_score=sign * metrics[cfg.early_stop], best_val=metrics, stale=0)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            progress["stale"] += 1
        if rank == 0:
            if improved:
                checkpoint.save_atomic({"model": best_state, "config": asdict(cfg), "metrics": metrics}, best_path)
            checkpoint.save_atomic({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "config": asdict(cfg), "progress": progress,
                "rng": checkpoint.rng_state(),
            }, last_path)
            _write_metrics(out, progress["history"])
            if show:
                tqdm.write(f"epoch {epoch}: train {metrics['train_loss']:.4f}  val {metrics['val_loss_total']:.4f}  "
                           f"trace acc {metrics['val_trace_accuracy']:.3f}  answer acc "
                           f"{metrics['val_answer_accuracy']:.3f}  halt F1 {metrics['val_halt_f1']:.3f}")
    model.load_state_dict(best_state)  # set: epoch 1 always improves on -inf, and a resumed run reads best.pt
    return TrainResult(best_path, progress["history"], progress["best_val"], model)
