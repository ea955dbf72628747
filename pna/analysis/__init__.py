"""Analysis of evaluation runs on per-example numpy arrays: entropy-halt coupling, lead/lag, halt metrics,
statistics and plots (see each module; the input layout is described in pna.analysis.series)."""
from pna.analysis.coupling import CouplingResult, coupling, pearson_r
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
    "fisher_z",
    "fisher_z_ttest_pvalue",
    "halt_confidence",
    "halting_metrics",
    "pearson_r",
    "plot_aligned_curves",
    "plot_cross_correlation",
    "plot_r_histogram",
    "plot_sweep_heatmap",
    "summarize",
    "threshold_lag",
    "wilcoxon_pvalue",
]
