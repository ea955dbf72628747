"""Which target positions of a batch are the trace and the answer: the one definition used by training's
validation metrics (pna.train) and by the evaluation pass (pna.evaluate)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pna.tokenizer import TOKENIZER


@dataclass
class TargetMasks:
    """Masks over the (B, L) positions p whose logits predict ids[:, p + 1].

    scored: the target is a token (not PAD / -100); trace: scored and from the input's end on (the trace,
    "Result:", the answer, HALT, EOS: everything the input determines, see trace_start); answer: rp <= p < halt_pos - 1, the
    positions predicting the answer tokens rp+1 .. HALT-1; halt_pos (B,): index of HALT, -1 where absent;
    has_answer (B,): HALT comes after "Result:".
    """

    scored: Tensor
    trace: Tensor
    answer: Tensor
    halt_pos: Tensor
    has_answer: Tensor

    def answer_correct(self, hit: Tensor) -> Tensor:
        """(B,) bool: every answer position predicted right (hit (B, L) bool), and the example has an answer."""
        return (hit | ~self.answer).all(dim=1) & self.has_answer


def first_index(ids: Tensor, token_id: int) -> Tensor:
    """Index of the first occurrence of token_id in every row of ids (B, L); -1 where absent."""
    hits = ids == token_id
    first = hits.float().argmax(dim=1)
    return torch.where(hits.any(dim=1), first, torch.full_like(first, -1))


# Tokens that only a trace writes (parity "1^0=1", arithmetic "3+5=8", sorting "D>B swap"), never an input.
TRACE_RELATIONS = ("=", "<", ">")


def trace_start(ids: Tensor) -> Tensor:
    """(B,) index of the space that ends each example's input: the last space before the first relation token
    ("=", "<", ">"), which only the trace writes; this skips the spaces inside a space-separated input (the
    original's sorting layout, "Input:D B F D>B swap ..."). Where no space precedes a relation: the first space;
    where there is no space at all: L. ids: (B, L) long."""
    length = ids.shape[1]
    positions = torch.arange(length, device=ids.device)[None]
    relation = torch.zeros_like(ids, dtype=torch.bool)
    for token in TRACE_RELATIONS:
        relation |= ids == TOKENIZER.encode(token)[0]
    first_relation = torch.where(relation.any(dim=1), relation.float().argmax(dim=1), length)
    space = ids == TOKENIZER.encode(" ")[0]
    before = torch.where(space & (positions < first_relation[:, None]), positions, -1).amax(dim=1)
    first_space = first_index(ids, TOKENIZER.encode(" ")[0])
    return torch.where(before >= 0, before, torch.where(first_space >= 0, first_space, length))


def target_masks(ids: Tensor, targets: Tensor, result_pos: Tensor) -> TargetMasks:
    """TargetMasks of a batch: ids, targets (B, L) long (targets -100 where not scored), result_pos (B,)."""
    positions = torch.arange(ids.shape[1], device=ids.device)[None]
    scored = targets != -100
    start = trace_start(ids)[:, None]
    halt_pos = first_index(ids, TOKENIZER.halt_id)
    answer = (positions >= result_pos[:, None]) & (positions < halt_pos[:, None] - 1)
    return TargetMasks(scored=scored, trace=scored & (positions >= start), answer=answer, halt_pos=halt_pos,
                       has_answer=halt_pos > result_pos)
