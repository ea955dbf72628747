"""Run a trained model over a split under teacher forcing and collect the per-example arrays the analyses use.

Arrays are padded to the split's max_len and keep the model's outputs at PAD positions too, because one of the
halt-F1 protocols (the original's) counts PAD positions; ``lengths`` and ``eos_pos`` say where each example ends.
protocol="faithful" lays the examples out as the original did (pna.tasks.TaskDataset: max_len - 1 positions,
long examples truncated, PAD labelled 1). Free generation lives in pna.generate.
"""
from __future__ import annotations

import inspect
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pna import atomic
from pna.analysis.faithful import SideBySide, energy_entropy_bits, faithful_metrics, side_by_side
from pna.analysis.halting import faithful_halt_f1
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
    trace_correct (N,) int and trace_count (N,) int: the same over the targets the input determines (the trace,
    "Result:", the answer, HALT, EOS; not the random input tokens; pna.masks.TargetMasks.trace);
    answer_correct (N,) bool: every answer token (after "Result:", before HALT) predicted correctly.
    first_answer_correct (N,) bool: the first answer token, predicted at rp, is right (the original's
    teacher-forced accuracy).
    channel_mean_entropy (N, L) float: the original's state entropy in bits of the last layer's channel-mean
    state s_t (pna.analysis.faithful.energy_entropy_bits); an empty (0,) array for a model without one (the
    Transformer), see has_channel_mean.
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
    trace_correct: np.ndarray
    trace_count: np.ndarray
    answer_correct: np.ndarray
    first_answer_correct: np.ndarray
    channel_mean_entropy: np.ndarray

    @property
    def n(self) -> int:
        """Number of examples."""
        return int(self.lengths.shape[0])

    @property
    def q(self) -> np.ndarray:
        """Halt confidence sigmoid(halt_logits), (N, L)."""
        return halt_confidence(self.halt_logits)

    @property
    def has_channel_mean(self) -> bool:
        """Whether channel_mean_entropy holds the original's entropy (an SSM) or is empty."""
        return self.channel_mean_entropy.shape == self.entropy.shape

    @property
    def first_answer_accuracy(self) -> float:
        """Teacher-forced accuracy of the first answer token at rp (the original's, e.g. D: 99.7%)."""
        return float(self.first_answer_correct.mean()) if self.n else float("nan")

    @property
    def token_accuracy(self) -> float:
        """Teacher-forced next-token accuracy over all scored targets."""
        return float(self.token_correct.sum() / max(1, self.token_count.sum()))

    @property
    def trace_accuracy(self) -> float:
        """Teacher-forced accuracy over the targets the input determines ("trace acc"), pooled over examples."""
        return float(self.trace_correct.sum() / max(1, self.trace_count.sum()))

    @property
    def answer_accuracy(self) -> float:
        """Fraction of examples whose whole answer is predicted correctly under teacher forcing."""
        return float(self.answer_correct.mean()) if self.n else float("nan")

    def subset(self, indices: Sequence[int]) -> "Evaluation":
        """The evaluation of the examples at `indices` (e.g. pna.tasks.first_answer_in(examples))."""
        rows = np.asarray(indices, dtype=np.int64)
        if rows.ndim != 1 or rows.size == 0 or (rows < 0).any() or (rows >= self.n).any():
            raise ValueError(f"indices: expected a non-empty list of example indices in 0..{self.n - 1}")
        empty = () if self.has_channel_mean else ("channel_mean_entropy",)  # a Transformer's: nothing to pick
        return Evaluation(**{name: getattr(self, name) if name in empty else getattr(self, name)[rows]
                             for name in self.__dataclass_fields__})

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


def _forward(model: torch.nn.Module, ids: torch.Tensor):
    """model(ids), asking for the channel-mean state where the model's forward takes return_channel_mean."""
    if "return_channel_mean" in inspect.signature(model.forward).parameters:
        return model(ids, return_channel_mean=True)
    return model(ids)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    examples: Sequence[Example],
    max_len: int,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    protocol: str = "corrected",
) -> Evaluation:
    """Teacher-forced pass of ``model`` over ``examples`` (padded to max_len in the protocol's layout, see
    pna.tasks.TaskDataset); see Evaluation for the arrays.

    model(input_ids (B, L)) must return an object with logits (B, L, V), halt_logits (B, L), entropy (B, L) and
    optionally channel_mean (B, L, N) (asked for with return_channel_mean=True where forward takes it).
    """
    if not examples:
        raise ValueError("examples: empty")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    model.eval()
    loader = make_loader(list(examples), batch_size=batch_size, shuffle=False, seed=0, max_len=max_len,
                         protocol=protocol)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in Evaluation.__dataclass_fields__}
    for batch in loader:
        ids = batch["input_ids"].to(device)
        targets = batch["targets"].to(device)
        out = _forward(model, ids)
        rp = batch["result_pos"].to(device)
        masks = target_masks(ids, targets, rp)
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
        parts["trace_correct"].append((hit & masks.trace).sum(dim=1).cpu().numpy())
        parts["trace_count"].append(masks.trace.sum(dim=1).cpu().numpy())
        parts["answer_correct"].append(answer_ok.cpu().numpy())
        first_hit = hit.gather(1, rp.clamp(max=ids.shape[1] - 1).unsqueeze(1)).squeeze(1)
        parts["first_answer_correct"].append(first_hit.cpu().numpy())
        channel_mean = getattr(out, "channel_mean", None)
        parts["channel_mean_entropy"].append(np.zeros(0) if channel_mean is None
                                             else energy_entropy_bits(channel_mean.float().cpu().numpy()))
    if any(chunk.size == 0 for chunk in parts["channel_mean_entropy"]):
        parts["channel_mean_entropy"] = [np.zeros(0)]
    return Evaluation(**{name: np.concatenate(chunks) for name, chunks in parts.items()})


def faithful_summary(evaluation: Evaluation, analysed: Sequence[int]) -> dict:
    """The faithful protocol's numbers of one SSM evaluation made with protocol="faithful" on the original's mixed
    test split (make_split("parity", "test", protocol="faithful")): r, threshold lag with its default counts and
    cross-correlations (pna.analysis.faithful_metrics of the channel-mean entropy in bits) and the original's halt
    F1 over the `analysed` examples (the original: pna.tasks.first_answer_in, n = 791), and the teacher-forced
    first-answer accuracy over the whole split. Raises ValueError for an evaluation without a channel-mean state
    (the Transformer's faithful r is pna.analysis.probe.answer_entropy_r)."""
    if not evaluation.has_channel_mean:
        raise ValueError("evaluation: has no channel-mean entropy (evaluate an SSM that returns channel_mean)")
    sub = evaluation.subset(analysed)
    metrics = faithful_metrics(sub.channel_mean_entropy, sub.halt_logits, sub.result_pos, sub.lengths)
    f1 = faithful_halt_f1(sub.halt_logits, sub.result_pos)
    return {**metrics.to_dict(), "n_analysed": sub.n, "halt_f1": f1.f1,
            "first_answer_accuracy": evaluation.first_answer_accuracy, "n_split": evaluation.n}


def definitions_side_by_side(evaluation: Evaluation, n_boot: int = 10_000, seed: int = 0) -> SideBySide:
    """r and tau of one SSM evaluation under both protocols (pna.analysis.side_by_side): the corrected statistics
    of its state entropy and the original's of its channel-mean entropy in bits."""
    if not evaluation.has_channel_mean:
        raise ValueError("evaluation: has no channel-mean entropy (evaluate an SSM that returns channel_mean)")
    return side_by_side(evaluation.entropy, evaluation.channel_mean_entropy, evaluation.halt_logits,
                        evaluation.result_pos, evaluation.lengths, n_boot=n_boot, seed=seed)
