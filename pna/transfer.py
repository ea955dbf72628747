"""Cross-task transfer of the halt detector: parity-trained model -> arithmetic chains.

1. Zero-shot: evaluate the parity checkpoint on the arithmetic test split and score its halt head.
2. Adapted: freeze the halt head (every parameter whose name contains "halt") and fine-tune the rest with
   cross-entropy only (the thermodynamic loss with alpha = beta = 0): AdamW lr 1e-4, at most 20 epochs, early
   stopping on validation CE with patience 5, keeping the best epoch's weights; then score the halt head again.
Halt metrics come from pna.analysis.halting (F1 before EOS and F1 counted over PAD as the original did, AUROC,
stop error), so the halt head itself never sees an arithmetic label: any gain comes from the representation.
"""
from __future__ import annotations

import copy
import math
import random
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch

from pna.analysis import binary_f1, halt_confidence, halting_metrics
from pna.analysis.series import HALT_THRESHOLD
from pna.evaluate import Evaluation, evaluate
from pna.loss import thermodynamic_loss
from pna.tasks import MAX_LEN, Example, make_loader, make_split
from pna.train import load_checkpoint

TRANSFER_TASK = "arithmetic"


@dataclass
class TransferResult:
    """zero_shot / adapted: halting metrics dicts on the arithmetic test split before / after fine-tuning;
    history: per-epoch {"epoch", "train_ce", "val_ce"}; best_epoch: the epoch whose weights were kept (0: none
    improved on the start); frozen: names of the frozen halt-head parameters; n_test: test examples."""

    zero_shot: dict[str, Any]
    adapted: dict[str, Any]
    history: list[dict[str, float]]
    best_epoch: int
    frozen: list[str]
    n_test: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def freeze_halt_head(model: torch.nn.Module) -> list[str]:
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


def f1_bootstrap_ci(
    evaluation: Evaluation, with_pad: bool, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the pooled halt F1, resampling whole examples (positions of one example stay
    together); positions under halt_mask, or every position with with_pad (the original's counting)."""
    if n_boot < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"n_boot, confidence: need n_boot >= 1 and 0 < confidence < 1, got {n_boot}, {confidence}")
    predicted = halt_confidence(evaluation.halt_logits) > HALT_THRESHOLD
    positive = evaluation.halt_labels == 1.0
    scored = np.ones_like(evaluation.halt_mask) if with_pad else evaluation.halt_mask
    rng = np.random.default_rng(seed)
    f1s = []
    for _ in range(n_boot):
        rows = rng.integers(0, evaluation.n, evaluation.n)
        f1s.append(binary_f1(predicted[rows][scored[rows]], positive[rows][scored[rows]]).f1)
    f1s = np.array([f for f in f1s if not math.isnan(f)])
    if f1s.size == 0:
        return math.nan, math.nan
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(f1s, tail)), float(np.percentile(f1s, 100 - tail))


def score_halting(evaluation: Evaluation) -> dict[str, Any]:
    """Halting metrics of an evaluation (pna.analysis.halting_metrics: "f1" before EOS, "f1_with_pad", AUROC,
    stop error) plus bootstrap CIs "f1_ci" and "f1_with_pad_ci" over examples."""
    metrics = halting_metrics(evaluation.halt_logits, evaluation.halt_labels, evaluation.halt_mask,
                              evaluation.result_pos).to_dict()
    metrics["f1_ci"] = list(f1_bootstrap_ci(evaluation, with_pad=False))
    metrics["f1_with_pad_ci"] = list(f1_bootstrap_ci(evaluation, with_pad=True))
    return metrics


def _mean_ce(model: torch.nn.Module, loader: Any, device: torch.device | str) -> float:
    """Mean over batches of the CE-only loss, without gradients."""
    model.eval()
    total, batches = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(batch["input_ids"])
            loss, _ = thermodynamic_loss(out.logits, out.halt_logits, out.entropy, batch, alpha=0.0, beta=0.0)
            total += float(loss)
            batches += 1
    return total / max(1, batches)


def finetune_ce(
    model: torch.nn.Module,
    train_examples: Sequence[Example],
    val_examples: Sequence[Example],
    max_len: int,
    lr: float = 1e-4,
    max_epochs: int = 20,
    patience: int = 5,
    batch_size: int = 32,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[list[dict[str, float]], int]:
    """Fine-tune the model's trainable parameters with CE only; keeps the best validation epoch's weights.

    Returns (history, best_epoch); best_epoch 0 means no epoch beat the starting validation CE and the
    starting weights were kept.
    """
    if max_epochs < 1 or patience < 1:
        raise ValueError(f"max_epochs and patience: must be >= 1, got {max_epochs} and {patience}")
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr: must be a positive number, got {lr}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    train_loader = make_loader(list(train_examples), batch_size=batch_size, shuffle=True, seed=seed, max_len=max_len)
    val_loader = make_loader(list(val_examples), batch_size=batch_size, shuffle=False, seed=seed, max_len=max_len)
    best_ce = _mean_ce(model, val_loader, device)
    best_state, best_epoch, stale = copy.deepcopy(model.state_dict()), 0, 0
    history: list[dict[str, float]] = []
    for epoch in range(1, max_epochs + 1):
        model.train()
        total, batches = 0.0, 0
        for batch in train_loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(batch["input_ids"])
            loss, _ = thermodynamic_loss(out.logits, out.halt_logits, out.entropy, batch, alpha=0.0, beta=0.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            total += loss.item()
            batches += 1
        val_ce = _mean_ce(model, val_loader, device)
        history.append({"epoch": epoch, "train_ce": total / max(1, batches), "val_ce": val_ce})
        if val_ce < best_ce:
            best_ce, best_state, best_epoch, stale = val_ce, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    return history, best_epoch


def run_transfer(
    checkpoint: str,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    max_epochs: int = 20,
    patience: int = 5,
    lr: float = 1e-4,
    batch_size: int = 32,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> TransferResult:
    """Zero-shot then adapted halt metrics of a parity checkpoint on arithmetic chains (None sizes: full splits)."""
    model, _ = load_checkpoint(checkpoint, device)
    max_len = MAX_LEN[TRANSFER_TASK]
    test = make_split(TRANSFER_TASK, "test", n=n_test)
    zero_shot = score_halting(evaluate(model, test, max_len=max_len, device=device))
    frozen = freeze_halt_head(model)
    history, best_epoch = finetune_ce(
        model, make_split(TRANSFER_TASK, "train", n=n_train), make_split(TRANSFER_TASK, "val", n=n_val),
        max_len=max_len, lr=lr, max_epochs=max_epochs, patience=patience, batch_size=batch_size, seed=seed,
        device=device,
    )
    adapted = score_halting(evaluate(model, test, max_len=max_len, device=device))
    return TransferResult(zero_shot, adapted, history, best_epoch, frozen, len(test))
