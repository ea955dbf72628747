"""Run a trained model over a split under teacher forcing and collect the per-example arrays the analyses use.

Arrays are padded to the split's max_len and keep the model's outputs at PAD positions too, because one of the
halt-F1 protocols (the original's) counts PAD positions; ``lengths`` and ``eos_pos`` say where each example ends.
Free generation lives in pna.generate.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pna import atomic
from pna.analysis.series import halt_confidence
from pna.masks import first_index, target_masks
from pna.tasks import Example, make_loader
from pna.tokenizer import TOKENIZER


@dataclass
class Evaluation:
    """Per-example arrays from one teacher-forced pass over N examples padded to length L.

    entropy (N, L) float: the model's (last layer's) state entropy per position, natural log.
    halt_logits (N, L) float: halt logit per position (halt confidence q = sigmoid of it, see ``q``).
    halt_labels (N, L) float: the training halt labels (0 / 0.5 / 1) as the dataset builds them.
    halt_mask (N, L) bool: non-PAD positions up to and including HALT (the positions before EOS).
    lengths (N,) int: non-PAD tokens per example; result_pos (N,) int: index of "Result:" (rp);
    eos_pos (N,) int: index of the EOS token; halt_pos (N,) int: index of the HALT token.
    token_correct (N,) int and token_count (N,) int: teacher-forced next-token hits and scored targets;
    answer_correct (N,) bool: every answer token (after "Result:", before HALT) predicted correctly.
    """

    entropy: np.ndarray
    halt_logits: np.ndarray
    halt_labels: np.ndarray
    halt_mask: np.ndarray
    lengths: np.ndarray
    result_pos: np.ndarray
    eos_pos: np.ndarray
    halt_pos: np.ndarray
    token_correct: np.ndarray
    token_count: np.ndarray
    answer_correct: np.ndarray

    @property
    def n(self) -> int:
        """Number of examples."""
        return int(self.lengths.shape[0])

    @property
    def q(self) -> np.ndarray:
        """Halt confidence sigmoid(halt_logits), (N, L)."""
        return halt_confidence(self.halt_logits)

    @property
    def token_accuracy(self) -> float:
        """Teacher-forced next-token accuracy over all scored targets."""
        return float(self.token_correct.sum() / max(1, self.token_count.sum()))

    @property
    def answer_accuracy(self) -> float:
        """Fraction of examples whose whole answer is predicted correctly under teacher forcing."""
        return float(self.answer_correct.mean()) if self.n else float("nan")

    def save(self, path: str | Path) -> Path:
        """Write every array to one .npz file; returns the path."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{name: getattr(self, name) for name in self.__dataclass_fields__})
        return atomic.write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "Evaluation":
        """Read an Evaluation written by ``save``."""
        with np.load(Path(path)) as data:
            return cls(**{name: data[name] for name in cls.__dataclass_fields__})


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    examples: Sequence[Example],
    max_len: int,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> Evaluation:
    """Teacher-forced pass of ``model`` over ``examples`` (padded to max_len); see Evaluation for the arrays.

    model(input_ids (B, L)) must return an object with logits (B, L, V), halt_logits (B, L), entropy (B, L).
    """
    if not examples:
        raise ValueError("examples: empty")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    model.eval()
    loader = make_loader(list(examples), batch_size=batch_size, shuffle=False, seed=0, max_len=max_len)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in Evaluation.__dataclass_fields__}
    for batch in loader:
        ids = batch["input_ids"].to(device)
        targets = batch["targets"].to(device)
        out = model(ids)
        masks = target_masks(ids, targets, batch["result_pos"].to(device))
        scored = masks.scored
        hit = (out.logits.argmax(dim=-1) == targets) & scored
        halt_pos = masks.halt_pos
        answer_ok = masks.answer_correct(hit)
        parts["entropy"].append(out.entropy.float().cpu().numpy())
        parts["halt_logits"].append(out.halt_logits.float().cpu().numpy())
        parts["halt_labels"].append(batch["halt_labels"].float().numpy())
        parts["halt_mask"].append(batch["halt_mask"].numpy())
        parts["lengths"].append(batch["lengths"].numpy())
        parts["result_pos"].append(batch["result_pos"].numpy())
        parts["eos_pos"].append(first_index(ids, TOKENIZER.eos_id).cpu().numpy())
        parts["halt_pos"].append(halt_pos.cpu().numpy())
        parts["token_correct"].append(hit.sum(dim=1).cpu().numpy())
        parts["token_count"].append(scored.sum(dim=1).cpu().numpy())
        parts["answer_correct"].append(answer_ok.cpu().numpy())
    return Evaluation(**{name: np.concatenate(chunks) for name, chunks in parts.items()})
