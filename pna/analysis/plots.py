"""Figures of the analysis, drawn with matplotlib's Agg canvas (no display, no pyplot state) and saved as PNG.

Every function takes arrays and an output path, creates the parent folder if needed and returns the path.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pna import atomic
from pna.analysis.series import aligned_curve, check_series

DPI = 120


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"path: expected a .png file name, got {str(path)!r}")
    FigureCanvasAgg(fig)
    return atomic.save_figure(fig, out, dpi=DPI, bbox_inches="tight")


def plot_aligned_curves(
    entropy: np.ndarray,
    halt_logits: np.ndarray,
    result_pos: np.ndarray,
    lengths: np.ndarray,
    path: str | os.PathLike[str],
    *,
    before: int = 12,
    after: int = 3,
    title: str = "",
) -> Path:
    """Mean state entropy (left axis) and halt confidence q (right axis) at offsets -before..after from rp,
    each with a +-1 standard deviation band across examples.

    entropy, halt_logits: (n, L); result_pos, lengths: (n,) ints (see pna.analysis.series).
    """
    ent, q, rp, lens = check_series(entropy, halt_logits, result_pos, lengths)
    e_curve = aligned_curve(ent, rp, lens, before, after)
    q_curve = aligned_curve(q, rp, lens, before, after)
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    ax.plot(e_curve.offsets, e_curve.mean, color="tab:blue", marker="o", ms=3, label="state entropy")
    ax.fill_between(e_curve.offsets, e_curve.mean - e_curve.std, e_curve.mean + e_curve.std,
                    color="tab:blue", alpha=0.2)
    ax.set_xlabel("token offset from Result: (rp)")
    ax.set_ylabel("state entropy (nats)", color="tab:blue")
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax2 = ax.twinx()
    ax2.plot(q_curve.offsets, q_curve.mean, color="tab:red", marker="s", ms=3, label="halt confidence q")
    ax2.fill_between(q_curve.offsets, q_curve.mean - q_curve.std, q_curve.mean + q_curve.std,
                     color="tab:red", alpha=0.2)
    ax2.axhline(0.5, color="tab:red", lw=0.8, ls=":")
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_ylabel("halt confidence q", color="tab:red")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="center left", fontsize=8)
    ax.set_title(title or f"aligned at rp (n = {ent.shape[0]}, bands: +-1 std)")
    return _save(fig, path)


def plot_cross_correlation(
    lags: np.ndarray,
    c: np.ndarray,
    path: str | os.PathLike[str],
    *,
    c_differenced: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Cross-correlation c(tau) of z(entropy) and z(q) against lag tau (k,), optionally with the curve of the first
    differences (k,). tau < 0: the halt signal leads the state entropy (see pna.analysis.lag)."""
    lags = np.asarray(lags)
    curves = [("levels", np.asarray(c, dtype=np.float64))]
    if c_differenced is not None:
        curves.append(("first differences", np.asarray(c_differenced, dtype=np.float64)))
    for name, curve in curves:
        if lags.ndim != 1 or curve.shape != lags.shape:
            raise ValueError(f"c: the {name} curve has shape {curve.shape}, lags has {lags.shape}")
    fig = Figure(figsize=(6.0, 3.8))
    ax = fig.add_subplot()
    for (name, curve), marker in zip(curves, ("o", "s")):
        ax.plot(lags, curve, marker=marker, ms=4, label=name)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(lags)
    ax.set_xlabel("lag tau (tau < 0: halt signal leads)")
    ax.set_ylabel("c(tau) = mean z(SE)[l] z(HC)[l - tau]")
    ax.legend(fontsize=8)
    ax.set_title(title or "entropy / halt-confidence cross-correlation")
    return _save(fig, path)


def plot_sweep_heatmap(
    values: np.ndarray,
    alphas: np.ndarray,
    betas: np.ndarray,
    path: str | os.PathLike[str],
    *,
    label: str,
    fmt: str = ".2f",
    title: str = "",
) -> Path:
    """Heatmap of a value over the alpha x beta sweep grid, values (len(alphas), len(betas)), each cell annotated;
    NaN cells (missing runs) are left blank and marked "n/a". label names the value on the colour bar."""
    vals = np.asarray(values, dtype=np.float64)
    alphas = np.asarray(alphas)
    betas = np.asarray(betas)
    if vals.shape != (alphas.size, betas.size):
        raise ValueError(f"values: expected shape ({alphas.size}, {betas.size}) = (alphas, betas), got {vals.shape}")
    if np.isinf(vals).any():
        raise ValueError("values: contains infinite values")
    fig = Figure(figsize=(1.1 * betas.size + 2.5, 0.7 * alphas.size + 1.8))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(vals), cmap="viridis", aspect="auto", origin="lower")
    fig.colorbar(image, ax=ax, label=label)
    ax.set_xticks(range(betas.size), [f"{b:g}" for b in betas])
    ax.set_yticks(range(alphas.size), [f"{a:g}" for a in alphas])
    ax.set_xlabel("beta (halt supervision)")
    ax.set_ylabel("alpha (energy penalty)")
    finite = vals[np.isfinite(vals)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(alphas.size):
        for j in range(betas.size):
            v = vals[i, j]
            text = "n/a" if np.isnan(v) else format(v, fmt)
            color = "black" if np.isnan(v) or v > mid else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_title(title or label)
    return _save(fig, path)


def plot_r_histogram(
    r: np.ndarray, path: str | os.PathLike[str], *, bins: int = 30, title: str = ""
) -> Path:
    """Histogram of per-example correlations r (n,) on [-1, 1], with the mean marked."""
    r = np.asarray(r, dtype=np.float64)
    if r.ndim != 1 or r.size == 0 or not np.isfinite(r).all() or np.abs(r).max() > 1.0:
        raise ValueError(f"r: expected a non-empty 1-D array of finite values in [-1, 1], got shape {r.shape}")
    fig = Figure(figsize=(5.6, 3.6))
    ax = fig.add_subplot()
    ax.hist(r, bins=bins, range=(-1.0, 1.0), color="tab:blue", alpha=0.8)
    ax.axvline(r.mean(), color="tab:red", label=f"mean r = {r.mean():.3f}")
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("per-example Pearson r(entropy, halt confidence)")
    ax.set_ylabel("examples")
    ax.legend(fontsize=8)
    ax.set_title(title or f"coupling r over {r.size} examples")
    return _save(fig, path)
