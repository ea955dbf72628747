"""Halt-detection quality: token-level F1 and AUROC of the halt head, and the first-crossing stop error.

Labels follow the task contract: 0 before rp - 2, 0.5 at rp - 2 and rp - 1, 1 from rp on. The positive class is
label == 1 (the answer has been reached); the two 0.5 positions count as negatives, so a head that fires one or two
tokens early is penalised. A token is predicted positive when q = sigmoid(halt logit) > 0.5.

Positions: the main F1/AUROC use halt_mask, the non-PAD positions up to and including HALT, i.e. every position
before EOS. faithful_halt_f1 (reported as f1_with_pad) is the original work's halt F1: q > 0.5 at EVERY position
of the padded sequence, positives t >= rp (so EOS and PAD count as positives, the 0.5-label positions rp-2 and
rp-1 as negatives), shown next to the main F1 so the effect of that choice is visible. F1 pools all positions of
all examples (micro average).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from pna.analysis.series import HALT_THRESHOLD, check_float_matrix, check_int_vector, halt_confidence
from pna.analysis.stats import json_float

HALT_LABEL_VALUES = (0.0, 0.5, 1.0)


@dataclass(frozen=True)
class F1Score:
    """Counts and scores of a binary prediction; precision / recall / f1 are NaN when their denominator is 0."""

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def binary_f1(predicted: np.ndarray, positive: np.ndarray) -> F1Score:
    """F1 of boolean predictions against boolean labels, both of the same shape (any), pooled over all entries."""
    pred = np.asarray(predicted)
    pos = np.asarray(positive)
    if pred.dtype != bool or pos.dtype != bool or pred.shape != pos.shape:
        raise ValueError(
            f"predicted, positive: expected boolean arrays of one shape, got {pred.dtype}{pred.shape} "
            f"and {pos.dtype}{pos.shape}"
        )
    tp = int((pred & pos).sum())
    fp = int((pred & ~pos).sum())
    fn = int((~pred & pos).sum())
    return F1Score(tp=tp, fp=fp, fn=fn, precision=_ratio(tp, tp + fp), recall=_ratio(tp, tp + fn),
                   f1=_ratio(2 * tp, 2 * tp + fp + fn))


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of scores (m,) for boolean labels positive (m,), from ranks (Mann-Whitney U).

    Equals P(score of a random positive > score of a random negative) + 0.5 P(equal): ties get average ranks.
    Raises ValueError if the shapes differ, a score is not finite, or either class is empty.
    """
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive)
    if s.ndim != 1 or pos.shape != s.shape or pos.dtype != bool:
        raise ValueError(f"scores, positive: expected 1-D float and bool arrays of one length, got {s.shape}, "
                         f"{pos.dtype}{pos.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores: contains NaN or infinite values")
    n_pos = int(pos.sum())
    n_neg = s.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"positive: AUROC needs both classes, got {n_pos} positives and {n_neg} negatives")
    ranks = rankdata(s)  # average ranks for ties
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


@dataclass(frozen=True)
class HaltingResult:
    """Halt metrics of n examples.

    before_eos: F1 over halt_mask positions; with_pad: faithful_halt_f1 (the original protocol). auroc:
    over halt_mask positions, scored by the halt logit (no sigmoid saturation ties). stop_error (n_crossed,):
    first t in halt_mask with q > 0.5, minus rp, for the examples that cross; early / exact / late: stop_error
    < 0 / == 0 / > 0, never: no crossing before EOS; the four rates are fractions of n and sum to 1.
    """

    n: int
    before_eos: F1Score
    with_pad: F1Score
    auroc: float
    stop_error: np.ndarray
    early_rate: float
    exact_rate: float
    late_rate: float
    never_rate: float

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready dict of the scalar metrics (per-example stop errors summarised); NaN becomes None."""
        crossed = self.stop_error.size > 0
        return {
            "n": self.n,
            "f1": json_float(self.before_eos.f1),
            "precision": json_float(self.before_eos.precision),
            "recall": json_float(self.before_eos.recall),
            "f1_with_pad": json_float(self.with_pad.f1),
            "auroc": json_float(self.auroc),
            "mean_stop_error": json_float(self.stop_error.mean()) if crossed else None,
            "mean_abs_stop_error": json_float(np.abs(self.stop_error).mean()) if crossed else None,
            "early_rate": self.early_rate,
            "exact_rate": self.exact_rate,
            "late_rate": self.late_rate,
            "never_rate": self.never_rate,
        }


def faithful_halt_f1(halt_logits: np.ndarray, result_pos: np.ndarray) -> F1Score:
    """The original's halt F1 (its compute_halt_f1 / evaluate_halt_transfer): predicted q = sigmoid(halt_logits)
    > 0.5 at every position of (n, L), positive t >= rp for rp = result_pos (n,), pooled over all n x L positions.
    """
    logits = check_float_matrix(halt_logits, "halt_logits")
    n, width = logits.shape
    rp = check_int_vector(result_pos, "result_pos", n)
    if (rp < 0).any():
        raise ValueError("result_pos: every rp must be >= 0")
    positive = np.arange(width)[None, :] >= rp[:, None]
    return binary_f1(halt_confidence(logits) > HALT_THRESHOLD, positive)


def halting_metrics(
    halt_logits: np.ndarray, halt_labels: np.ndarray, halt_mask: np.ndarray, result_pos: np.ndarray
) -> HaltingResult:
    """F1 (before EOS and the original's faithful_halt_f1), AUROC and stop error of the halt head.

    halt_logits, halt_labels: (n, L) float; halt_mask: (n, L) bool, True at non-PAD positions up to and including
    HALT; result_pos: (n,) int with halt_mask[i, rp_i] True. Labels under halt_mask must be 0, 0.5 or 1; labels
    outside it only need to be finite (label == 1 is positive there too). Raises ValueError on invalid input.
    """
    logits = check_float_matrix(halt_logits, "halt_logits")
    labels = check_float_matrix(halt_labels, "halt_labels", logits.shape)
    mask = np.asarray(halt_mask)
    if mask.shape != logits.shape or mask.dtype != bool:
        raise ValueError(f"halt_mask: expected a bool array of shape {logits.shape}, got {mask.dtype}{mask.shape}")
    n, width = logits.shape
    rp = check_int_vector(result_pos, "result_pos", n)
    if (rp < 0).any() or (rp >= width).any() or not mask[np.arange(n), np.clip(rp, 0, width - 1)].all():
        raise ValueError("result_pos: every rp must index a position inside halt_mask")
    if not np.isin(labels[mask], HALT_LABEL_VALUES).all():
        raise ValueError(f"halt_labels: values under halt_mask must be one of {HALT_LABEL_VALUES}")

    predicted = halt_confidence(logits) > HALT_THRESHOLD
    positive = labels == 1.0
    fires = predicted & mask
    crossed = fires.any(axis=1)
    stop_error = (np.argmax(fires, axis=1) - rp)[crossed]
    return HaltingResult(
        n=n,
        before_eos=binary_f1(predicted[mask], positive[mask]),
        with_pad=faithful_halt_f1(logits, rp),
        auroc=auroc(logits[mask], positive[mask]),
        stop_error=stop_error,
        early_rate=float((stop_error < 0).sum() / n),
        exact_rate=float((stop_error == 0).sum() / n),
        late_rate=float((stop_error > 0).sum() / n),
        never_rate=float((~crossed).sum() / n),
    )
