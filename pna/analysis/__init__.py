"""Analysis of evaluation runs on per-example numpy arrays: entropy-halt coupling, lead/lag, halt metrics,
statistics and plots (see each module; the input layout is described in pna.analysis.series)."""
from pna.analysis.coupling import CouplingResult, coupling, pearson_r
from pna.analysis.faithful import (FaithfulResult, SideBySide, energy_entropy_bits, faithful_metrics,
                                   seed_distribution, side_by_side)
from pna.analysis.halting import F1Score, HaltingResult, auroc, binary_f1, faithful_halt_f1, halting_metrics
from pna.analysis.lag import CrossCorrelationResult, ThresholdLagResult, cross_correlation, threshold_lag
from pna.analysis.plots import plot_aligned_curves, plot_cross_correlation, plot_r_histogram, plot_sweep_heatmap
from pna.analysis.series import MIN_RESULT_POS, aligned_curve, halt_confidence
from pna.analysis.stats import Summary, bootstrap_ci, fisher_z, fisher_z_ttest_pvalue, summarize, wilcoxon_pvalue

__all__ = [
    "MIN_RESULT_POS",
    "CouplingResult",
    "CrossCorrelationResult",
    "F1Score",
    "FaithfulResult",
    "SideBySide",
    "HaltingResult",
    "Summary",
    "ThresholdLagResult",
    "aligned_curve",
    "auroc",
    "binary_f1",
    "bootstrap_ci",
    "coupling",
    "faithful_halt_f1",
    "cross_correlation",
    "energy_entropy_bits",
    "faithful_metrics",
    "fisher_z",
    "fisher_z_ttest_pvalue",
    "halt_confidence",
    "halting_metrics",
    "pearson_r",
    "plot_aligned_curves",
    "plot_cross_correlation",
    "plot_r_histogram",
    "plot_sweep_heatmap",
    "seed_distribution",
    "side_by_side",
    "summarize",
    "threshold_lag",
    "wilcoxon_pvalue",
]
