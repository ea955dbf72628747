"""Lead/lag between the state-entropy collapse and the rise of halt confidence, over each example's window 0..rp.

Sign convention (DESIGN.md, the paper's, shared by both measures): tau = t_halt - t_collapse. A NEGATIVE lag means
the halt confidence q = sigmoid(halt logit) rises BEFORE the state entropy collapses (the halt signal leads, the
paper's reading of its tau = -2.03); a positive lag means the state entropy collapses first (the state leads).
The cross-correlation uses the same axis: c(k) = mean_l z(SE)[l] z(HC)[l + k], so an extremum at k < 0 pairs the
entropy at l with the halt confidence |k| steps EARLIER (the halt signal leads).
Window: positions 0..rp (inclusive), the prompt and reasoning trace up to the "Result:" token, and only examples
with rp >= min_result_pos; the same window and eligibility as the coupling r, so the two are measured on the same
tokens (cross_correlation's c(0) equals the mean coupling r). Tokens after rp (the answer, HALT, EOS) are left
out: their states encode the emitted answer, not the approach to it, and their entropy would move the min/max
that define the collapse threshold. A halt confidence that first crosses 0.5 after rp therefore counts as
censored (see also the first-crossing stop error in pna.analysis.halting, which looks at every position).
These are the corrected definitions; the original's (collapse = first t with se[t] < 0.5 se[0], defaults instead
of censoring) are in pna.analysis.faithful.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pna.analysis.series import HALT_THRESHOLD, MIN_RESULT_POS, reasoning_windows
from pna.analysis.stats import Summary, summarize

# Cross-correlation lags -MAX_LAG..MAX_LAG.
MAX_LAG = 5
# Collapse: first position where entropy < min + COLLAPSE_FRACTION * (max - min) of the window.
COLLAPSE_FRACTION = 0.5


def check_max_lag(max_lag: int) -> None:
    """ValueError unless max_lag is an integer >= 0."""
    if isinstance(max_lag, bool) or not isinstance(max_lag, (int, np.integer)) or max_lag < 0:
        raise ValueError(f"max_lag: expected an integer >= 0, got {max_lag!r}")


def collapse_index(entropy: np.ndarray) -> int | None:
    """First index t with entropy[t] < min + 0.5 (max - min) of the 1-D series (m,); None if it is constant."""
    e = np.asarray(entropy, dtype=np.float64)
    lo, hi = e.min(), e.max()
    if hi == lo:
        return None
    return int(np.argmax(e < lo + COLLAPSE_FRACTION * (hi - lo)))


def crossing_index(confidence: np.ndarray) -> int | None:
    """First index t with confidence[t] > 0.5 of the 1-D series (m,); None if it never crosses."""
    above = np.asarray(confidence) > HALT_THRESHOLD
    return int(np.argmax(above)) if above.any() else None


@dataclass(frozen=True)
class ThresholdLagResult:
    """tau = first(q > 0.5) - first(collapse) per uncensored example (n,) int; tau < 0: the halt signal leads.

    n_short: left out for rp < min_result_pos. Censored (left out, counted per reason, an example may have both):
    n_no_collapse (entropy constant over 0..rp), n_no_crossing (q never > 0.5 over 0..rp); n_censored is their
    union. summary.fraction_negative is the fraction of uncensored examples where the halt signal leads.
    """

    tau: np.ndarray
    summary: Summary
    n_short: int
    n_no_collapse: int
    n_no_crossing: int
    n_censored: int

    def to_dict(self) -> dict[str, float | int | str | None]:
        """JSON-ready summary (per-example tau left out); NaN becomes None."""
        return {
            **self.summary.to_dict(),
            "n_short": self.n_short,
            "n_no_collapse": self.n_no_collapse,
            "n_no_crossing": self.n_no_crossing,
            "n_censored": self.n_censored,
            "sign_convention": "tau = first(q > 0.5) - first(collapse); tau < 0: the halt signal leads",
        }


def threshold_lag(
    entropy: np.ndarray,
    halt_logits: np.ndarray,
    result_pos: np.ndarray,
    lengths: np.ndarray,
    *,
    min_result_pos: int = MIN_RESULT_POS,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ThresholdLagResult:
    """Threshold lag tau = first(q > 0.5) - first(entropy < min + 0.5 (max - min)) over 0..rp, per example.

    Negative tau: the halt confidence crosses 0.5 before the entropy collapses (the halt signal leads). entropy,
    halt_logits: (n, L); result_pos, lengths: (n,) ints (see pna.analysis.series). n_boot, confidence, seed: the
    bootstrap CI of the mean tau. Raises ValueError on invalid input.
    """
    windows = reasoning_windows(entropy, halt_logits, result_pos, lengths, min_result_pos)
    taus: list[int] = []
    n_no_collapse = n_no_crossing = n_censored = 0
    for e, q in zip(windows.entropy, windows.confidence):
        t_collapse, t_cross = collapse_index(e), crossing_index(q)
        n_no_collapse += t_collapse is None
        n_no_crossing += t_cross is None
        if t_collapse is None or t_cross is None:
            n_censored += 1
        else:
            taus.append(t_cross - t_collapse)
    tau = np.array(taus, dtype=np.int64)
    return ThresholdLagResult(
        tau=tau,
        summary=summarize(tau, n_boot=n_boot, confidence=confidence, seed=seed),
        n_short=windows.n_short,
        n_no_collapse=n_no_collapse,
        n_no_crossing=n_no_crossing,
        n_censored=n_censored,
    )


def lagged_products(x: np.ndarray, y: np.ndarray, max_lag: int) -> np.ndarray:
    """c(k) = (1 / (m - |k|)) * sum_l x[l] * y[l + k] for k = -max_lag..max_lag, over the m - |k| indices l
    where both terms exist. x, y: 1-D (m,) with m > max_lag; returns (2 * max_lag + 1,).

    With x = z(entropy) and y = z(q), a minimum at k < 0 means x's fall at l lines up with y's rise at l - |k|:
    q moves first (the halt signal leads).
    """
    m = x.size
    out = np.empty(2 * max_lag + 1)
    for j, k in enumerate(range(-max_lag, max_lag + 1)):
        if k >= 0:
            out[j] = x[: m - k] @ y[k:] / (m - k)
        else:
            out[j] = x[-k:] @ y[: m + k] / (m + k)
    return out


def zscore(x: np.ndarray) -> np.ndarray | None:
    """(x - mean) / std (population std, ddof=0) of a 1-D series (m,); None if x is constant."""
    if np.ptp(x) == 0:
        return None
    d = x - x.mean()
    return d / np.sqrt(d @ d / x.size)


@dataclass(frozen=True)
class CrossCorrelationResult:
    """Mean over examples of per-example cross-correlations c(k) of z-scored entropy and halt confidence.

    lags: (2 * max_lag + 1,) ints; c: same shape. lag_argmin / lag_argmax: the lag of the most negative / most
    positive c (first one on ties; None when n = 0). For entropy falling while q rises (negative coupling)
    lag_argmin is the lag: negative means the halt signal leads. differenced: True if computed on first
    differences. n: examples averaged;
    n_short: left out for rp < min_result_pos or a series of at most max_lag points; n_constant: left out because
    a series is constant (z-score undefined).
    """

    lags: np.ndarray
    c: np.ndarray
    lag_argmin: int | None
    lag_argmax: int | None
    differenced: bool
    n: int
    n_short: int
    n_constant: int

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict: lags and c as lists, NaN c (n = 0) as None."""
        return {
            "lags": [int(t) for t in self.lags],
            "c": [None if np.isnan(v) else float(v) for v in self.c],
            "lag_argmin": self.lag_argmin,
            "lag_argmax": self.lag_argmax,
            "differenced": self.differenced,
            "n": self.n,
            "n_short": self.n_short,
            "n_constant": self.n_constant,
            "sign_convention": "c(k) = mean_l z(SE)[l] z(HC)[l + k]; k < 0: the halt signal leads",
        }


def cross_correlation(
    entropy: np.ndarray,
    halt_logits: np.ndarray,
    result_pos: np.ndarray,
    lengths: np.ndarray,
    *,
    max_lag: int = MAX_LAG,
    differenced: bool = False,
    min_result_pos: int = MIN_RESULT_POS,
) -> CrossCorrelationResult:
    """c(k) = mean over examples of mean_l z(SE)[l] * z(HC)[l + k], k = -max_lag..max_lag, over 0..rp.

    SE = entropy, HC = q = sigmoid(halt_logits), each z-scored per example over its window (or, with
    differenced=True, their first differences SE[l+1] - SE[l], z-scored). The inner mean divides by the number
    of overlapping terms, m - |k|, so c(0) is the example's Pearson r; at k != 0 the z-scores still use the
    whole window's mean and std, so |c(k)| can exceed 1 (most visibly for the sparse differenced series).
    k < 0: the halt signal leads.
    entropy, halt_logits: (n, L); result_pos, lengths: (n,) ints. With no usable example (n = 0) c is all NaN
    and lag_argmin / lag_argmax are None. Raises ValueError on invalid input.
    """
    check_max_lag(max_lag)
    windows = reasoning_windows(entropy, halt_logits, result_pos, lengths, min_result_pos)
    curves: list[np.ndarray] = []
    n_short, n_constant = windows.n_short, 0
    for e, q in zip(windows.entropy, windows.confidence):
        if differenced:
            e, q = np.diff(e), np.diff(q)
        if e.size <= max_lag:
            n_short += 1
            continue
        ze, zq = zscore(e), zscore(q)
        if ze is None or zq is None:
            n_constant += 1
            continue
        curves.append(lagged_products(ze, zq, max_lag))
    lags = np.arange(-max_lag, max_lag + 1)
    c = np.mean(curves, axis=0) if curves else np.full(lags.size, np.nan)
    return CrossCorrelationResult(
        lags=lags,
        c=c,
        lag_argmin=int(lags[np.argmin(c)]) if curves else None,
        lag_argmax=int(lags[np.argmax(c)]) if curves else None,
        differenced=differenced,
        n=len(curves),
        n_short=n_short,
        n_constant=n_constant,
    )
