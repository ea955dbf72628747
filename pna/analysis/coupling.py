"""Entropy-halt coupling: per-example Pearson r between state entropy and halt confidence over positions 0..rp.

A strongly negative mean r means the state entropy falls as the halt confidence q = sigmoid(halt logit) rises
(the original work reports r = -0.836 for the SSM and -0.07 for the Transformer).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pna.analysis.series import MIN_RESULT_POS, reasoning_windows
from pna.analysis.stats import Summary, fisher_z_ttest_pvalue, json_float, summarize, wilcoxon_pvalue


def pearson_r(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation of two equal-length 1-D series (m,), m >= 2; None when either series is constant."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(f"x, y: expected two 1-D series of the same length >= 2, got {x.shape} and {y.shape}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    dx = x - x.mean()
    dy = y - y.mean()
    r = float(dx @ dy / np.sqrt((dx @ dx) * (dy @ dy)))
    return min(1.0, max(-1.0, r))


@dataclass(frozen=True)
class CouplingResult:
    """Per-example r (n,) of the included examples, their summary and significance tests.

    n_short: examples left out because rp < min_result_pos; n_constant: examples left out because entropy or
    halt confidence is constant over 0..rp (r undefined). p_fisher_t: two-sided one-sample t-test of the mean
    Fisher z against 0; p_wilcoxon: two-sided Wilcoxon signed-rank test of r against 0.
    """

    r: np.ndarray
    summary: Summary
    n_short: int
    n_constant: int
    p_fisher_t: float
    p_wilcoxon: float

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready summary (per-example r left out); NaN becomes None."""
        return {
            **self.summary.to_dict(),
            "n_short": self.n_short,
            "n_constant": self.n_constant,
            "p_fisher_t": json_float(self.p_fisher_t),
            "p_wilcoxon": json_float(self.p_wilcoxon),
        }


def coupling(
    entropy: np.ndarray,
    halt_logits: np.ndarray,
    result_pos: np.ndarray,
    lengths: np.ndarray,
    *,
    min_result_pos: int = MIN_RESULT_POS,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> CouplingResult:
    """Pearson r(entropy[0..rp], sigmoid(halt_logits)[0..rp]) per example with rp >= min_result_pos, summarised.

    entropy, halt_logits: (n, L); result_pos, lengths: (n,) ints with rp < length <= L (see pna.analysis.series).
    n_boot, confidence, seed: the bootstrap CI of the mean r. Raises ValueError on invalid input.
    """
    windows = reasoning_windows(entropy, halt_logits, result_pos, lengths, min_result_pos)
    rs = [pearson_r(e, q) for e, q in zip(windows.entropy, windows.confidence)]
    r = np.array([v for v in rs if v is not None], dtype=np.float64)
    return CouplingResult(
        r=r,
        summary=summarize(r, n_boot=n_boot, confidence=confidence, seed=seed),
        n_short=windows.n_short,
        n_constant=sum(v is None for v in rs),
        p_fisher_t=fisher_z_ttest_pvalue(r),
        p_wilcoxon=wilcoxon_pvalue(r),
    )
