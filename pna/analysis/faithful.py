"""The original work's coupling and lag statistics (the faithful protocol), and both protocols side by side.

What the original computed (src/ssm_state_entropy_collapse.py compute_state_entropy and
src/phase17_proprioception_repro.py compute_all_metrics), per example with rp >= 5 over positions 0..rp, i.e.
a window of L = rp + 1 points:

* state entropy (energy_entropy_bits): of the channel-mean state s_t = mean_d h_t[d, :] (N = 16 entries), not of
  the whole D x N state: p = s^2 / (sum s^2 + 1e-9), H = -sum p log2(p + 1e-9), in bits;
* r: Pearson r of SE and q = sigmoid(halt logit) when L >= 3 and both standard deviations exceed 1e-8 (NaN
  otherwise, left out of the mean); mean, median, std (ddof 0) and fraction negative over the valid examples;
* threshold lag: sc = first t with SE[t] < 0.5 SE[0], else L; hr = first t with q > 0.5, else L; tau = hr - sc,
  averaged over ALL examples (none censored). The channel-mean entropy rarely halves, so sc is usually the
  default L, and the 0.5 halt labels at rp-2, rp-1 put hr near rp - 1 = L - 2: tau near -2 by construction.
  The counts of examples at each default are reported beside the mean for that reason;
* cross-correlation: per example, z-scored series (population std; NaN curve when a std < 1e-8), scipy
  correlate(x, y, "full") / n read at lags -5..5, i.e. c(k) = (1/n) sum_l x[l] y[l - k] (the ORIGINAL's axis:
  k > 0 pairs the entropy with the halt confidence k steps earlier, so positive k = the halt signal leads, the
  opposite axis of pna.analysis.lag, see lead_* below); the mean curve over examples (nanmean); levels:
  argmin of the mean curve; derivatives: x = -diff(SE), y = diff(q), argmax. Levels need L >= 7, derivatives
  L >= 8.
tau here has DESIGN's sign (tau = t_halt - t_collapse, negative: the halt signal leads), which is the original's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import correlate

from pna.analysis.coupling import CouplingResult, coupling, pearson_r
from pna.analysis.lag import MAX_LAG, ThresholdLagResult, check_max_lag, threshold_lag
from pna.analysis.series import HALT_THRESHOLD, MIN_RESULT_POS, reasoning_windows
from pna.analysis.stats import json_float

# The original's floors: the epsilon of the energy entropy and the smallest std it treats as non-constant.
ENTROPY_EPS = 1e-9
STD_FLOOR = 1e-8
COLLAPSE_RATIO = 0.5


def energy_entropy_bits(states: np.ndarray) -> np.ndarray:
    """The original's energy entropy in bits of states (..., N) over the last axis -> (...): p = s^2 /
    (sum s^2 + 1e-9), H = -sum p log2(p + 1e-9). Applied to the channel-mean state s_t (B, L, 16)."""
    s = np.asarray(states, dtype=np.float64)
    if s.ndim < 1 or s.shape[-1] < 1:
        raise ValueError(f"states: expected an array (..., N) with N >= 1, got shape {s.shape}")
    energy = s**2
    p = energy / (energy.sum(axis=-1, keepdims=True) + ENTROPY_EPS)
    return -(p * np.log2(p + ENTROPY_EPS)).sum(axis=-1)


def original_threshold_crossings(entropy: np.ndarray, confidence: np.ndarray) -> tuple[int, int]:
    """(sc, hr) of one window (m,): sc = first t with entropy[t] < 0.5 entropy[0], hr = first t with
    confidence[t] > 0.5, each m (= L, the window length) when it never happens."""
    m = len(entropy)
    below = np.flatnonzero(np.asarray(entropy) < COLLAPSE_RATIO * entropy[0])
    above = np.flatnonzero(np.asarray(confidence) > HALT_THRESHOLD)
    return (int(below[0]) if below.size else m), (int(above[0]) if above.size else m)


def original_xcorr(x: np.ndarray, y: np.ndarray, max_lag: int = MAX_LAG) -> np.ndarray:
    """The original's normalised cross-correlation at lags -max_lag..max_lag on its axis (module docstring):
    correlate(z(x), z(y), "full") / n, NaN where |lag| > n - 1 or a series has std < 1e-8. x, y: (n,)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.size
    out = np.full(2 * max_lag + 1, np.nan)
    if x.std() < STD_FLOOR or y.std() < STD_FLOOR:
        return out
    full = correlate((x - x.mean()) / x.std(), (y - y.mean()) / y.std(), mode="full") / n
    for j, k in enumerate(range(-max_lag, max_lag + 1)):
        if abs(k) <= n - 1:
            out[j] = full[k + n - 1]
    return out


@dataclass(frozen=True)
class FaithfulResult:
    """The original's statistics over n examples (rp >= min_result_pos; n_short left out).

    r: (n_valid,) per-example r where defined; mean_r, median_r, std_r (ddof 0), fraction_negative over them.
    sc, hr, tau: (n,) per example (tau = hr - sc); window: (n,) L = rp + 1; n_sc_default / n_hr_default: the
    examples where sc / hr took the default L (the entropy never halved / q never crossed 0.5 by rp).
    lags: (2 max_lag + 1,) on the original's axis; raw_c, deriv_c: mean curves over examples (NaN where no
    example has that lag); raw_peak_lag (argmin) and deriv_peak_lag (argmax) on that axis, None without curves.
    """

    r: np.ndarray
    n_short: int
    sc: np.ndarray
    hr: np.ndarray
    window: np.ndarray
    lags: np.ndarray
    raw_c: np.ndarray
    deriv_c: np.ndarray

    @property
    def n(self) -> int:
        """Examples analysed (all of them enter tau)."""
        return int(self.sc.size)

    @property
    def tau(self) -> np.ndarray:
        """Per-example threshold lag hr - sc, (n,) int."""
        return self.hr - self.sc

    @property
    def n_sc_default(self) -> int:
        """Examples whose entropy never fell below half its first value (sc = L)."""
        return int((self.sc == self.window).sum())

    @property
    def n_hr_default(self) -> int:
        """Examples whose halt confidence never exceeded 0.5 in 0..rp (hr = L)."""
        return int((self.hr == self.window).sum())

    @staticmethod
    def _peak(c: np.ndarray, lags: np.ndarray, pick) -> int | None:
        return None if np.isnan(c).all() else int(lags[pick(c)])

    @property
    def raw_peak_lag(self) -> int | None:
        """Lag of the most negative mean level curve, on the original's axis (positive: the halt signal leads)."""
        return self._peak(self.raw_c, self.lags, np.nanargmin)

    @property
    def deriv_peak_lag(self) -> int | None:
        """Lag of the most positive mean derivative curve corr(-dSE, dq), on the original's axis."""
        return self._peak(self.deriv_c, self.lags, np.nanargmax)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary; NaN becomes None. lead_* give the peak lags on DESIGN's axis (negated)."""
        r, tau = self.r, self.tau

        def stat(f, x):
            return json_float(f(x)) if x.size else None

        return {
            "n": self.n,
            "n_short": self.n_short,
            "r": {"n_valid": int(r.size), "mean": stat(np.mean, r), "median": stat(np.median, r),
                  "std": stat(np.std, r), "fraction_negative": stat(lambda x: (x < 0).mean(), r)},
            "tau": {"mean": stat(np.mean, tau), "median": stat(np.median, tau), "std": stat(np.std, tau),
                    "n_sc_default": self.n_sc_default, "n_hr_default": self.n_hr_default,
                    "n_both_default": int(((self.sc == self.window) & (self.hr == self.window)).sum()),
                    "sign_convention": "tau = hr - sc (t_halt - t_collapse); tau < 0: the halt signal leads"},
            "xcorr": {"lags": [int(k) for k in self.lags],
                      "raw_c": [json_float(v) for v in self.raw_c], "deriv_c": [json_float(v) for v in self.deriv_c],
                      "raw_peak_lag": self.raw_peak_lag, "deriv_peak_lag": self.deriv_peak_lag,
                      "lead_raw": None if self.raw_peak_lag is None else -self.raw_peak_lag,
                      "lead_deriv": None if self.deriv_peak_lag is None else -self.deriv_peak_lag,
                      "axis": "original: c(k) = (1/n) sum_l z(SE)[l] z(q)[l - k], k > 0: the halt signal leads; "
                              "lead_* = -peak: DESIGN's axis, negative: the halt signal leads"},
        }


def faithful_metrics(
    entropy_bits: np.ndarray,
    halt_logits: np.ndarray,
    result_pos: np.ndarray,
    lengths: np.ndarray,
    *,
    min_result_pos: int = MIN_RESULT_POS,
    max_lag: int = MAX_LAG,
) -> FaithfulResult:
    """The original's r, threshold lag and cross-correlations (module docstring) over windows 0..rp.

    entropy_bits: (n, L) the channel-mean energy entropy (energy_entropy_bits of s_t); halt_logits: (n, L);
    result_pos, lengths: (n,) ints as in pna.analysis.series. Raises ValueError on invalid input.
    """
    check_max_lag(max_lag)
    windows = reasoning_windows(entropy_bits, halt_logits, result_pos, lengths, min_result_pos)
    rs, sc, hr, width, raw, deriv = [], [], [], [], [], []
    nan_curve = np.full(2 * max_lag + 1, np.nan)
    for se, q in zip(windows.entropy, windows.confidence):
        m = se.size
        if m >= 3 and se.std() > STD_FLOOR and q.std() > STD_FLOOR:
            rs.append(pearson_r(se, q))
        s, h = original_threshold_crossings(se, q)
        sc.append(s)
        hr.append(h)
        width.append(m)
        raw.append(original_xcorr(se, q, max_lag) if m >= max_lag + 2 else nan_curve)
        deriv.append(original_xcorr(-np.diff(se), np.diff(q), max_lag) if m >= max_lag + 3 else nan_curve)

    def mean_curve(curves: list[np.ndarray]) -> np.ndarray:
        stacked = np.array(curves) if curves else nan_curve[None, :]
        has = ~np.isnan(stacked).all(axis=0)
        out = np.full(stacked.shape[1], np.nan)
        out[has] = np.nanmean(stacked[:, has], axis=0)
        return out

    return FaithfulResult(
        r=np.array([v for v in rs if v is not None], dtype=np.float64),
        n_short=windows.n_short,
        sc=np.array(sc, dtype=np.int64),
        hr=np.array(hr, dtype=np.int64),
        window=np.array(width, dtype=np.int64),
        lags=np.arange(-max_lag, max_lag + 1),
        raw_c=mean_curve(raw),
        deriv_c=mean_curve(deriv),
    )


@dataclass(frozen=True)
class SideBySide:
    """r and tau of the same model under both protocols: corrected (coupling r and censored min-max threshold
    lag of the model's own entropy, pna.analysis.coupling / lag) and faithful (the original's statistics of the
    channel-mean entropy in bits). Both lags use tau = t_halt - t_collapse."""

    corrected_r: CouplingResult
    corrected_tau: ThresholdLagResult
    faithful: FaithfulResult

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: {"corrected": {"r", "tau"}, "faithful": ...}."""
        return {"corrected": {"r": self.corrected_r.to_dict(), "tau": self.corrected_tau.to_dict()},
                "faithful": self.faithful.to_dict()}


def side_by_side(
    entropy: np.ndarray,
    channel_mean_entropy_bits: np.ndarray,
    halt_logits: np.ndarray,
    result_pos: np.ndarray,
    lengths: np.ndarray,
    *,
    n_boot: int = 10_000,
    seed: int = 0,
) -> SideBySide:
    """Both definitions for one evaluation: entropy (n, L) the corrected protocol's state entropy (the whole
    state, nats), channel_mean_entropy_bits (n, L) the original's; halt_logits (n, L); result_pos, lengths (n,)."""
    return SideBySide(
        corrected_r=coupling(entropy, halt_logits, result_pos, lengths, n_boot=n_boot, seed=seed),
        corrected_tau=threshold_lag(entropy, halt_logits, result_pos, lengths, n_boot=n_boot, seed=seed),
        faithful=faithful_metrics(channel_mean_entropy_bits, halt_logits, result_pos, lengths),
    )


def seed_distribution(values: list[float]) -> dict[str, object]:
    """One number per seed (e.g. each seed's faithful mean r) as a distribution: each value, mean, sd (ddof 1),
    min and max; NaN-free input required, sd None with fewer than two seeds."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or not np.isfinite(x).all():
        raise ValueError(f"values: expected a non-empty list of finite numbers, got {values!r}")
    return {"values": [float(v) for v in x], "n": int(x.size), "mean": float(x.mean()),
            "sd": float(x.std(ddof=1)) if x.size > 1 else None, "min": float(x.min()), "max": float(x.max())}


__all__ = ["ENTROPY_EPS", "FaithfulResult", "SideBySide", "energy_entropy_bits", "faithful_metrics",
           "original_threshold_crossings", "original_xcorr", "seed_distribution", "side_by_side"]
