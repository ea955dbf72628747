"""Per-example series of an evaluation run: input checks, halt confidence and the reasoning window 0..rp.

The window metrics (coupling, lag, aligned curves) take a batch of n examples padded to a common length L:

    entropy      (n, L) float  state entropy of each token (natural log)
    halt_logits  (n, L) float  halt logit of each token; halt confidence q = sigmoid(halt logit)
    result_pos   (n,)   int    rp, the index of the "Result:" token
    lengths      (n,)   int    number of non-PAD tokens, with rp < length <= L

Entries past an example's length are never used by these metrics but must still be finite.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

# Examples with rp below this are left out of coupling and lag (too few points for a correlation).
MIN_RESULT_POS = 5
# A token is predicted "halt" when q > HALT_THRESHOLD.
HALT_THRESHOLD = 0.5


def halt_confidence(halt_logits: np.ndarray) -> np.ndarray:
    """q = sigmoid(halt_logits) in float64, same shape as halt_logits."""
    return expit(np.asarray(halt_logits, dtype=np.float64))


def check_float_matrix(x: np.ndarray, name: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """x as a finite float64 (n, L) array with n >= 1 and L >= 1 (and the given shape, if any); else ValueError."""
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D array (n, L), got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name}: expected a real-valued array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def check_int_vector(x: np.ndarray, name: str, n: int) -> np.ndarray:
    """x as an int64 (n,) array; ValueError if it has another shape or a non-integer dtype."""
    arr = np.asarray(x)
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def check_series(
    entropy: np.ndarray, halt_logits: np.ndarray, result_pos: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated (entropy (n, L) f64, q = sigmoid(halt_logits) (n, L) f64, result_pos (n,) i64, lengths (n,) i64).

    Raises ValueError naming the argument when shapes disagree, a value is not finite, or not 0 <= rp < length <= L.
    """
    ent = check_float_matrix(entropy, "entropy")
    logits = check_float_matrix(halt_logits, "halt_logits", ent.shape)
    rp, lens = check_positions(result_pos, lengths, ent.shape)
    return ent, halt_confidence(logits), rp, lens


def check_positions(
    result_pos: np.ndarray, lengths: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (result_pos (n,) i64, lengths (n,) i64) for a batch of the given (n, L) shape.

    Raises ValueError naming the argument unless every example has 0 <= rp < length <= L.
    """
    n, width = shape
    rp = check_int_vector(result_pos, "result_pos", n)
    lens = check_int_vector(lengths, "lengths", n)
    if (lens < 1).any() or (lens > width).any():
        raise ValueError(f"lengths: every length must lie in [1, L={width}], got min {lens.min()}, max {lens.max()}")
    bad = np.flatnonzero((rp < 0) | (rp >= lens))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"result_pos: must satisfy 0 <= rp < length; example {i} has rp={rp[i]}, length={lens[i]}")
    return rp, lens


def check_min_result_pos(min_result_pos: int) -> None:
    """ValueError unless min_result_pos is an integer >= 1 (a window needs at least two points)."""
    if isinstance(min_result_pos, bool) or not isinstance(min_result_pos, (int, np.integer)) or min_result_pos < 1:
        raise ValueError(f"min_result_pos: expected an integer >= 1, got {min_result_pos!r}")


@dataclass(frozen=True)
class ReasoningWindows:
    """Entropy and halt confidence over positions 0..rp (inclusive) of the examples with rp >= min_result_pos.

    entropy[i] and confidence[i] have shape (rp_i + 1,); n_short counts the examples left out for rp < min_result_pos.
    """

    entropy: list[np.ndarray]
    confidence: list[np.ndarray]
    n_short: int


def reasoning_windows(
    entropy: np.ndarray,
    halt_logits: np.ndarray,
    result_pos: np.ndarray,
    lengths: np.ndarray,
    min_result_pos: int = MIN_RESULT_POS,
) -> ReasoningWindows:
    """Cut each example's window 0..rp (the prompt and the reasoning trace up to and including "Result:").

    Shapes as in the module docstring. Raises ValueError on invalid input (see check_series).
    """
    check_min_result_pos(min_result_pos)
    ent, q, rp, _ = check_series(entropy, halt_logits, result_pos, lengths)
    keep = np.flatnonzero(rp >= min_result_pos)
    return ReasoningWindows(
        entropy=[ent[i, : rp[i] + 1] for i in keep],
        confidence=[q[i, : rp[i] + 1] for i in keep],
        n_short=int(rp.size - keep.size),
    )


@dataclass(frozen=True)
class AlignedCurve:
    """Mean and standard deviation across examples of a per-token value at offset k from rp (position rp + k).

    offsets, mean, std, count: (before + after + 1,). count[j] is the number of examples that have position
    rp + offsets[j] inside their valid length; mean and std are NaN where count is 0, std is NaN where count is 1.
    """

    offsets: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray


def aligned_curve(
    values: np.ndarray, result_pos: np.ndarray, lengths: np.ndarray, before: int, after: int
) -> AlignedCurve:
    """Average values (n, L) over examples at offsets -before..after from each example's rp (std with ddof=1).

    values must be finite; result_pos and lengths (n,) as in the module docstring; before, after >= 0.
    """
    vals = check_float_matrix(values, "values")
    n, width = vals.shape
    rp, lens = check_positions(result_pos, lengths, vals.shape)
    for name, value in (("before", before), ("after", after)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
    offsets = np.arange(-before, after + 1)
    pos = rp[:, None] + offsets[None, :]  # (n, K)
    inside = (pos >= 0) & (pos < lens[:, None])
    gathered = np.where(inside, vals[np.arange(n)[:, None], np.clip(pos, 0, width - 1)], np.nan)
    count = inside.sum(axis=0)
    mean = np.full(offsets.size, np.nan)
    std = np.full(offsets.size, np.nan)
    has = count > 0
    mean[has] = np.nanmean(gathered[:, has], axis=0)
    many = count > 1
    std[many] = np.nanstd(gathered[:, many], axis=0, ddof=1)
    return AlignedCurve(offsets=offsets, mean=mean, std=std, count=count)
