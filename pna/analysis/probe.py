"""The original's Phase-8 statistic (src/entropy_halt_correlation.py), the source of its Transformer r = -0.07.

It is NOT the SSM's statistic (state entropy vs halt confidence). For a frozen model (the original: group A, CE
only, so its halt head was never trained):
1. hidden states h_t (B, L, d_model) are read after the final LayerNorm (the model's norm_f);
2. a linear probe d_model -> 2 is trained to predict the binary answer (the first answer token, 0 or 1) from
   h_t at EVERY position of the padded sequence (the label broadcast over all L positions, PAD included), with
   cross-entropy, Adam lr 1e-3, 10 epochs, batch 64, shuffled, on the training split filtered to first answers
   0 / 1 (pna.tasks.first_answer_in);
3. on the filtered test split, per example with rp >= 3, the probe's answer entropy H_t = -sum p log2(p + 1e-9)
   (bits) over positions 0..rp is correlated (Pearson, both stds > 1e-8, length >= 3) with the model's own halt
   confidence sigmoid(halt logit) over 0..rp; the mean over examples is the reported r.
Torch code (the rest of pna.analysis is numpy): it needs the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pna.analysis.coupling import pearson_r
from pna.analysis.faithful import ENTROPY_EPS, STD_FLOOR
from pna.tasks import Example, first_answer_in, make_loader
from pna.tokenizer import TOKENIZER


@dataclass(frozen=True)
class ProbeConfig:
    """The original's probe settings: epochs, Adam lr, batch size; seed for the probe's init and shuffling;
    min_result_pos: examples with rp below it are skipped (the original: 3); max_len and protocol: the layout
    (the original: 64, "faithful")."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    min_result_pos: int = 3
    max_len: int = 64
    protocol: str = "faithful"


@dataclass(frozen=True)
class ProbeResult:
    """r: (n_valid,) per-example r; n: examples with rp >= min_result_pos; probe_accuracy: the probe's accuracy
    at rp on the test examples (the original's sanity check)."""

    r: np.ndarray
    n: int
    probe_accuracy: float

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready summary (the original's fields: mean, std ddof 0, median, fraction negative)."""
        r = self.r
        if r.size == 0:
            return {"n": self.n, "n_valid": 0, "mean": None, "std": None, "median": None,
                    "fraction_negative": None, "probe_accuracy": self.probe_accuracy}
        return {"n": self.n, "n_valid": int(r.size), "mean": float(r.mean()), "std": float(r.std()),
                "median": float(np.median(r)), "fraction_negative": float((r < 0).mean()),
                "probe_accuracy": self.probe_accuracy}


def post_norm_hidden(model: nn.Module, input_ids: Tensor) -> tuple[Tensor, Tensor]:
    """(hidden (B, L, d_model) after the model's final LayerNorm norm_f, halt_logits (B, L)) of one forward pass."""
    captured: list[Tensor] = []
    handle = model.norm_f.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        out = model(input_ids)
    finally:
        handle.remove()
    return captured[-1].float(), out.halt_logits.detach().float()


def _answer_labels(batch: dict[str, Tensor]) -> Tensor:
    """1 where the first answer token (the target at rp) is "1", else 0 (the original's get_answer_label)."""
    first = batch["targets"].gather(1, batch["result_pos"].unsqueeze(1)).squeeze(1)
    return (first == TOKENIZER.encode("1")[0]).long()


def _filtered(examples: Sequence[Example], name: str) -> list[Example]:
    kept = [examples[i] for i in first_answer_in(list(examples))]
    if not kept:
        raise ValueError(f"{name}: no example has a first answer token 0 or 1")
    return kept


def answer_entropy_r(
    model: nn.Module,
    train_examples: Sequence[Example],
    test_examples: Sequence[Example],
    config: ProbeConfig = ProbeConfig(),
    device: torch.device | str = "cpu",
) -> ProbeResult:
    """The Phase-8 r of a frozen model (module docstring); examples are filtered to first answers 0 / 1 here."""
    train = _filtered(train_examples, "train_examples")
    test = _filtered(test_examples, "test_examples")
    model.eval()  # frozen: hidden states are read under no_grad, only the probe learns
    loader = make_loader(train, config.batch_size, True, config.seed, config.max_len, protocol=config.protocol)
    with torch.no_grad():
        width = post_norm_hidden(model, loader.dataset.input_ids[:1].to(device))[0].shape[-1]
    torch.manual_seed(config.seed)
    probe = nn.Linear(width, 2).to(device)
    optimizer = torch.optim.Adam(probe.parameters(), lr=config.lr)
    for _ in range(config.epochs):
        for batch in loader:
            with torch.no_grad():
                hidden, _ = post_norm_hidden(model, batch["input_ids"].to(device))
            labels = _answer_labels(batch).to(device)[:, None].expand(hidden.shape[:2])
            loss = F.cross_entropy(probe(hidden).flatten(0, 1), labels.flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    rs: list[float] = []
    n = hits = 0
    with torch.no_grad():
        for batch in make_loader(test, config.batch_size, False, 0, config.max_len, protocol=config.protocol):
            hidden, halt_logits = post_norm_hidden(model, batch["input_ids"].to(device))
            probs = F.softmax(probe(hidden), dim=-1)
            entropy = -(probs * torch.log2(probs + ENTROPY_EPS)).sum(dim=-1).cpu().numpy()
            q = torch.sigmoid(halt_logits).cpu().numpy()
            rp = batch["result_pos"].numpy()
            labels = _answer_labels(batch).numpy()
            hits += int((probs.argmax(-1).cpu().numpy()[np.arange(len(rp)), rp] == labels).sum())
            for b, r in enumerate(rp):
                if r < config.min_result_pos:
                    continue
                n += 1
                h, c = entropy[b, : r + 1].astype(np.float64), q[b, : r + 1].astype(np.float64)
                if h.size >= 3 and h.std() > STD_FLOOR and c.std() > STD_FLOOR:
                    value = pearson_r(h, c)
                    if value is not None:
                        rs.append(value)
    return ProbeResult(r=np.array(rs, dtype=np.float64), n=n, probe_accuracy=hits / len(test))
