"""The thermodynamic loss: parts, masks, and which terms carry gradient in each mode."""
from __future__ import annotations

import math

import pytest
import torch

from pna.loss import expected_compute, thermodynamic_loss


def tiny_batch():
    gen = torch.Generator().manual_seed(0)
    B, L, V = 2, 5, 4
    batch = {
        "targets": torch.tensor([[1, 2, 3, -100, -100], [2, 2, -100, -100, -100]]),
        "halt_labels": torch.tensor([[0, 0.5, 0.5, 1, 1], [0.5, 1, 1, 1, 1]]),
        "halt_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], dtype=torch.bool),
    }
    logits = torch.randn(B, L, V, generator=gen, requires_grad=True)
    halt = torch.randn(B, L, generator=gen, requires_grad=True)
    entropy = torch.rand(B, L, generator=gen, requires_grad=True)
    return logits, halt, entropy, batch


def test_parts_match_hand_computation():
    logits, halt, entropy, batch = tiny_batch()
    loss, parts = thermodynamic_loss(logits, halt, entropy, batch, alpha=0.3, beta=0.7, gamma=0.2)
    mask = batch["halt_mask"]
    ce_terms = [
        math.log(sum(math.exp(v) for v in logits.detach()[b, t].tolist())) - float(logits.detach()[b, t, y])
        for b in range(2) for t in range(5) if (y := int(batch["targets"][b, t])) != -100
    ]
    ce = sum(ce_terms) / len(ce_terms)
    bce_terms = []
    survival_terms = []
    for b in range(2):
        surv = 1.0
        for t in range(5):
            if not mask[b, t]:
                continue
            x, y = float(halt.detach()[b, t]), float(batch["halt_labels"][b, t])
            q = 1 / (1 + math.exp(-x))
            bce_terms.append(-(y * math.log(q) + (1 - y) * math.log(1 - q)))
            surv *= 1 - q
            survival_terms.append(surv)
    ent = float(entropy.detach()[mask].mean())
    assert parts["ce"] == pytest.approx(ce, rel=1e-6)
    assert parts["bce"] == pytest.approx(sum(bce_terms) / len(bce_terms), rel=1e-6)
    assert parts["energy"] == pytest.approx(sum(survival_terms) / len(survival_terms), rel=1e-6)
    assert parts["entropy"] == pytest.approx(ent, rel=1e-6)
    want = ce + 0.3 * parts["energy"] + 0.7 * parts["bce"] + 0.2 * ent
    assert parts["total"] == pytest.approx(want, rel=1e-6) and float(loss.detach()) == pytest.approx(want, rel=1e-6)
    _, faithful = thermodynamic_loss(logits, halt, entropy, batch, alpha=0.3, beta=0.7, gamma=0.2, mode="faithful")
    # faithful: E and S the same values (without gradient); BCE the mean over all B x L = 10 positions
    all_bce = [-(y * math.log(q) + (1 - y) * math.log(1 - q))
               for x, y in zip(halt.detach().flatten().tolist(), batch["halt_labels"].flatten().tolist())
               for q in [1 / (1 + math.exp(-x))]]
    assert faithful["bce"] == pytest.approx(sum(all_bce) / 10, rel=1e-6) != pytest.approx(parts["bce"])
    same = {k: faithful[k] for k in ("ce", "energy", "entropy")}
    assert same == pytest.approx({k: parts[k] for k in same}, rel=1e-6)
    want_faithful = ce + 0.3 * parts["energy"] + 0.7 * faithful["bce"] + 0.2 * ent
    assert faithful["total"] == pytest.approx(want_faithful, rel=1e-6)


def _halt_grad(alpha, gamma, mode):
    logits, halt, entropy, batch = tiny_batch()
    loss, _ = thermodynamic_loss(logits, halt, entropy, batch, alpha=alpha, beta=0.5, gamma=gamma, mode=mode)
    g_halt, g_ent = torch.autograd.grad(loss, (halt, entropy), allow_unused=True)
    return g_halt, (torch.zeros_like(entropy) if g_ent is None else g_ent)


def test_energy_has_gradient_in_corrected_mode_only():
    base, _ = _halt_grad(0.0, 0.0, "corrected")
    corrected, _ = _halt_grad(0.5, 0.0, "corrected")
    faithful, _ = _halt_grad(0.5, 0.0, "faithful")
    faithful_base, _ = _halt_grad(0.0, 0.0, "faithful")
    assert (corrected - base).abs().max() > 1e-3  # the energy term moves the halt logits
    assert torch.equal(faithful, faithful_base)  # faithful: a constant, no gradient at all
    assert (corrected - base)[~tiny_batch()[3]["halt_mask"]].abs().max() == 0  # masked positions untouched
    assert ((corrected - base)[tiny_batch()[3]["halt_mask"]] < 0).all()  # raising q lowers expected compute


def test_entropy_term_gradient_by_mode():
    _, corrected = _halt_grad(0.0, 0.4, "corrected")
    _, faithful = _halt_grad(0.0, 0.4, "faithful")
    assert corrected.abs().sum() > 0 and faithful.abs().sum() == 0


def test_bce_ignores_masked_positions_and_ce_ignores_padding():
    logits, halt, entropy, batch = tiny_batch()
    _, parts = thermodynamic_loss(logits, halt, entropy, batch, 0.1, 0.1)
    halt2, logits2 = halt.detach().clone(), logits.detach().clone()
    halt2[~batch["halt_mask"]] = 50.0
    logits2[batch["targets"] == -100] = 9.0
    _, parts2 = thermodynamic_loss(logits2, halt2, entropy, batch, 0.1, 0.1)
    assert parts2["bce"] == pytest.approx(parts["bce"]) and parts2["ce"] == pytest.approx(parts["ce"])
    assert parts2["energy"] == pytest.approx(parts["energy"])


def test_expected_compute_long_sequence_is_finite():
    halt = torch.full((1, 4000), 3.0, requires_grad=True)
    value = expected_compute(halt, torch.ones(1, 4000, dtype=torch.bool))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(halt.grad).all()


def test_bad_arguments():
    logits, halt, entropy, batch = tiny_batch()
    with pytest.raises(ValueError, match="^mode:"):
        thermodynamic_loss(logits, halt, entropy, batch, 0.1, 0.1, mode="exact")
    with pytest.raises(ValueError, match="^beta:"):
        thermodynamic_loss(logits, halt, entropy, batch, 0.1, -1.0)
    with pytest.raises(ValueError, match="^gamma:"):
        thermodynamic_loss(logits, halt, entropy, batch, 0.1, 0.1, gamma=float("nan"))
    with pytest.raises(ValueError, match="^logits:"):
        thermodynamic_loss(logits[0], halt, entropy, batch, 0.1, 0.1)
    with pytest.raises(ValueError, match="^entropy:"):
        thermodynamic_loss(logits, halt, entropy[:, :3], batch, 0.1, 0.1)
    with pytest.raises(ValueError, match=r"^batch\['halt_labels'\]:"):
        thermodynamic_loss(logits, halt, entropy, {**batch, "halt_labels": batch["halt_labels"][:1]}, 0.1, 0.1)
    with pytest.raises(ValueError, match="^batch: missing 'targets'"):
        thermodynamic_loss(logits, halt, entropy, {k: v for k, v in batch.items() if k != "targets"}, 0.1, 0.1)
    with pytest.raises(ValueError, match=r"^batch\['halt_mask'\]:"):
        thermodynamic_loss(logits, halt, entropy, {**batch, "halt_mask": torch.zeros(2, 5, dtype=torch.bool)}, 0.1, 0.1)
