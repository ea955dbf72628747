"""The thermodynamic loss: L = CE + alpha * E + beta * BCE_halt + gamma * S.

Two modes:
- "corrected" (default): E is the expected compute of ACT / PonderNet, the masked mean over valid tokens of the
  survival S_t = prod_{j<=t} (1 - q_j) with q = sigmoid(halt logit). It is differentiable, so alpha really
  pushes the model to become confident of halting early. S is the masked mean of the state entropy, also
  differentiable.
- "faithful": the original work computed its energy and entropy terms under no_grad, so they add a constant to
  the loss and contribute no gradient at all; training is then CE + beta * BCE whatever alpha and gamma are.
  This mode keeps that behaviour for reproduction (same E and S values, detached), and takes the halt BCE as the
  original did: the mean over ALL B x L positions, PAD included, against the labels in the batch (the faithful
  loader labels PAD 1, see pna.tasks.TaskDataset).
Valid tokens (for E, S and, in the corrected mode, BCE) are halt_mask: non-PAD positions up to and including
HALT. CE ignores PAD targets (-100) in both modes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LOSS_MODES = ("corrected", "faithful")


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum()


def expected_compute(halt_logits: Tensor, mask: Tensor) -> Tensor:
    """Masked mean of the survival prod_{j<=t} (1 - sigmoid(halt_logits_j)), (B, L) -> scalar.

    Computed in log space (log(1 - sigmoid(x)) = logsigmoid(-x)), so long sequences do not underflow."""
    survival = torch.exp(torch.cumsum(F.logsigmoid(-halt_logits.float()) * mask, dim=1))
    return _masked_mean(survival, mask)


def _check_shapes(logits: Tensor, halt_logits: Tensor, entropy: Tensor, batch: dict[str, Tensor]) -> None:
    if logits.dim() != 3:
        raise ValueError(f"logits: expected (B, L, V), got shape {tuple(logits.shape)}")
    bl = tuple(logits.shape[:2])
    named = {"halt_logits": halt_logits, "entropy": entropy}
    for key in ("targets", "halt_labels", "halt_mask"):
        if key not in batch:
            raise ValueError(f"batch: missing {key!r}")
        named[f"batch[{key!r}]"] = batch[key]
    for name, tensor in named.items():
        if tuple(tensor.shape) != bl:
            raise ValueError(f"{name}: expected shape {bl} (the B, L of logits), got {tuple(tensor.shape)}")
    if batch["halt_mask"].dtype != torch.bool or not batch["halt_mask"].any():
        raise ValueError("batch['halt_mask']: expected a bool mask with at least one valid position")


def thermodynamic_loss(
    logits: Tensor,
    halt_logits: Tensor,
    entropy: Tensor,
    batch: dict[str, Tensor],
    alpha: float,
    beta: float,
    gamma: float = 0.0,
    mode: str = "corrected",
) -> tuple[Tensor, dict[str, float]]:
    """The training loss and its parts.

    Args:
        logits: (B, L, V) next-token logits; halt_logits: (B, L); entropy: (B, L) state entropy.
        batch: from pna.tasks.make_loader (targets, halt_labels, halt_mask are used).
        alpha, beta, gamma: weights of the energy, halt BCE and entropy terms.
        mode: "corrected" or "faithful" (see the module docstring).

    Returns:
        (loss, {"ce", "energy", "bce", "entropy", "total"} as floats).
    """
    if mode not in LOSS_MODES:
        raise ValueError(f"mode: expected one of {LOSS_MODES}, got {mode!r}")
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not value >= 0:
            raise ValueError(f"{name}: expected a non-negative weight, got {value}")
    _check_shapes(logits, halt_logits, entropy, batch)
    mask = batch["halt_mask"]
    ce = F.cross_entropy(logits.float().flatten(0, 1), batch["targets"].flatten(), ignore_index=-100)
    bce_terms = F.binary_cross_entropy_with_logits(halt_logits.float(), batch["halt_labels"].float(), reduction="none")
    bce = bce_terms.mean() if mode == "faithful" else _masked_mean(bce_terms, mask)
    with torch.set_grad_enabled(torch.is_grad_enabled() and mode == "corrected"):
        energy = expected_compute(halt_logits, mask)
        state_entropy = _masked_mean(entropy.float(), mask)
    total = ce + alpha * energy + beta * bce + gamma * state_entropy
    names = ("ce", "energy", "bce", "entropy", "total")
    values = torch.stack([ce, energy, bce, state_entropy, total]).detach().tolist()  # one device sync
    return total, dict(zip(names, values))
