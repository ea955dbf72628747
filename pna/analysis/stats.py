"""Statistics over per-example values: a summary with a seeded bootstrap CI, the Fisher-z t-test and Wilcoxon.

Statistics that are undefined for the data at hand (fewer than two values) are NaN, never an error: the count
`n` beside them says why. `json_float` turns NaN into None for JSON output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

# |r| is clipped to this before arctanh so that r = +-1 gives a large finite Fisher z instead of +-inf.
R_CLIP = 1.0 - 1e-12
# Bootstrap resamples are drawn in batches of this many to bound memory (n_boot x n floats otherwise).
_BOOTSTRAP_BATCH = 1000


def json_float(value: float) -> float | None:
    """float(value), or None when it is NaN or infinite (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _check_values(values: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of values (n,), reproducible for a given seed.

    Returns (low, high); (NaN, NaN) when n < 2. Raises ValueError for n_boot < 1 or confidence outside (0, 1).
    """
    x = _check_values(values, "values")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot: expected an integer >= 1, got {n_boot!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a value in (0, 1), got {confidence!r}")
    if x.size < 2:
        return math.nan, math.nan
    res = sps.bootstrap(
        (x,),
        np.mean,
        n_resamples=int(n_boot),
        batch=_BOOTSTRAP_BATCH,
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def fisher_z(r: np.ndarray) -> np.ndarray:
    """Fisher transform arctanh(r) of correlations r (any shape), with |r| clipped to R_CLIP first."""
    return np.arctanh(np.clip(np.asarray(r, dtype=np.float64), -R_CLIP, R_CLIP))


def fisher_z_ttest_pvalue(r: np.ndarray) -> float:
    """Two-sided p-value of a one-sample t-test of mean Fisher z of correlations r (n,) against 0; NaN if n < 2.

    When all z are equal the sample has no spread: p is 0 if that value is non-zero (an infinite t statistic, as
    scipy reports it) and NaN if it is 0.
    """
    x = _check_values(r, "r")
    if np.abs(x).max(initial=0.0) > 1.0:
        raise ValueError("r: correlations must lie in [-1, 1]")
    if x.size < 2:
        return math.nan
    z = fisher_z(x)
    if np.ptp(z) == 0:
        return 0.0 if z[0] != 0 else math.nan
    return float(sps.ttest_1samp(z, 0.0).pvalue)


def wilcoxon_pvalue(values: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of values (n,) against a median of 0 (scipy defaults: zeros dropped,
    exact for small n without ties); NaN if n < 2 or every value is 0."""
    x = _check_values(values, "values")
    if x.size < 2 or not x.any():
        return math.nan
    return float(sps.wilcoxon(x).pvalue)


@dataclass(frozen=True)
class Summary:
    """Location and spread of per-example values: std is the sample std (ddof=1); [ci_low, ci_high] is the
    percentile bootstrap interval of the mean at level `confidence`. Fields are NaN when n < 2 (mean, median and
    fraction_negative need only n >= 1)."""

    n: int
    mean: float
    median: float
    std: float
    fraction_negative: float
    ci_low: float
    ci_high: float
    confidence: float

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready dict of all fields; NaN becomes None."""
        out: dict[str, float | int | None] = {"n": self.n}
        for key in ("mean", "median", "std", "fraction_negative", "ci_low", "ci_high", "confidence"):
            out[key] = json_float(getattr(self, key))
        return out


def summarize(values: np.ndarray, n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0) -> Summary:
    """Summary of values (n,) with a bootstrap CI of the mean (see bootstrap_ci for n_boot, confidence, seed)."""
    x = _check_values(values, "values")
    low, high = bootstrap_ci(x, n_boot=n_boot, confidence=confidence, seed=seed)
    empty = x.size == 0
    return Summary(
        n=int(x.size),
        mean=math.nan if empty else float(x.mean()),
        median=math.nan if empty else float(np.median(x)),
        std=float(x.std(ddof=1)) if x.size >= 2 else math.nan,
        fraction_negative=math.nan if empty else float((x < 0).mean()),
        ci_low=low,
        ci_high=high,
        confidence=float(confidence),
    )
