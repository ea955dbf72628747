"""Known-answer tests of pna.analysis: coupling, lag sign conventions, censoring, halt metrics, stats, plots, and the
original work's statistics (the faithful protocol)."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from scipy.special import logit
from scipy.stats import pearsonr

from pna.analysis import (
    aligned_curve,
    auroc,
    binary_f1,
    bootstrap_ci,
    coupling,
    cross_correlation,
    energy_entropy_bits,
    faithful_halt_f1,
    faithful_metrics,
    fisher_z_ttest_pvalue,
    halting_metrics,
    plot_aligned_curves,
    plot_cross_correlation,
    plot_r_histogram,
    plot_sweep_heatmap,
    seed_distribution,
    side_by_side,
    summarize,
    threshold_lag,
)
from pna.analysis.faithful import original_threshold_crossings, original_xcorr
from pna.analysis.probe import ProbeConfig, answer_entropy_r
from pna.tasks import first_answer_in, make_split
from pna.tokenizer import TOKENIZER

WIDTH = 32


def step_batch(lag: int, n: int = 40, seed: int = 0, rising_entropy: bool = False, noise: float = 0.05):
    """q steps up through 0.5 at t_q = rp - 4 while the entropy steps down (or up) at t_q - lag, so that
    lag = t_halt - t_collapse: lag < 0, the halt signal leads; lag > 0, the state leads."""
    rng = np.random.default_rng(seed)
    rp = rng.integers(9, 20, size=n)
    lengths = rp + 4
    pos = np.arange(WIDTH)[None, :]
    t_q = (rp - 4)[:, None]
    high_then_low = np.where(pos < t_q - lag, 3.0, 1.0)
    entropy = (4.0 - high_then_low if rising_entropy else high_then_low) + noise * rng.standard_normal((n, WIDTH))
    halt_logits = np.where(pos < t_q, -3.0, 3.0) + noise * rng.standard_normal((n, WIDTH))
    return entropy, halt_logits, rp, lengths


@pytest.mark.parametrize("lag", [-2, 2])
def test_constructed_lag_is_found_with_one_sign_by_threshold_and_cross_correlation(lag):
    entropy, halt_logits, rp, lengths = step_batch(lag)
    thr = threshold_lag(entropy, halt_logits, rp, lengths, n_boot=200)
    assert thr.n_censored == 0 and thr.summary.n == 40
    assert np.all(thr.tau == lag)
    assert thr.summary.fraction_negative == (1.0 if lag < 0 else 0.0)  # negative: the halt signal leads
    for differenced in (False, True):
        xc = cross_correlation(entropy, halt_logits, rp, lengths, differenced=differenced)
        assert xc.n == 40
        assert xc.lag_argmin == lag  # entropy falls as q rises: the extremum is a minimum
        assert xc.c[xc.lags == lag][0] < -0.5


def test_cross_correlation_argmax_for_positively_coupled_signals():
    entropy, halt_logits, rp, lengths = step_batch(-2, rising_entropy=True)
    xc = cross_correlation(entropy, halt_logits, rp, lengths)
    assert xc.lag_argmax == -2
    assert xc.c.max() > 0.5


def test_cross_correlation_at_lag_zero_is_the_mean_coupling_r():
    rng = np.random.default_rng(3)
    entropy = rng.standard_normal((25, WIDTH))
    halt_logits = -entropy + rng.standard_normal((25, WIDTH))
    rp = rng.integers(5, 25, size=25)
    lengths = rp + 1
    r = coupling(entropy, halt_logits, rp, lengths, n_boot=100)
    xc = cross_correlation(entropy, halt_logits, rp, lengths)
    assert xc.c[xc.lags == 0][0] == pytest.approx(r.summary.mean, abs=1e-12)
    assert r.summary.mean < -0.3


def test_independent_signals_give_mean_r_near_zero_and_no_significance():
    rng = np.random.default_rng(2024)
    entropy = rng.standard_normal((200, WIDTH))
    halt_logits = rng.standard_normal((200, WIDTH))
    rp = np.full(200, 20)
    res = coupling(entropy, halt_logits, rp, rp + 2, n_boot=500)
    assert abs(res.summary.mean) < 0.05
    assert res.summary.ci_low < 0 < res.summary.ci_high
    assert res.p_fisher_t > 0.05 and res.p_wilcoxon > 0.05
    assert 0.35 < res.summary.fraction_negative < 0.65


def test_perfectly_anti_coupled_signals_give_r_minus_one_and_tiny_p():
    rng = np.random.default_rng(5)
    entropy = rng.uniform(0.0, 8.0, size=(12, WIDTH))
    halt_logits = logit(0.9 - 0.1 * entropy)  # q is an exact decreasing linear function of entropy
    rp = np.full(12, 10)
    res = coupling(entropy, halt_logits, rp, rp + 1, n_boot=100)
    np.testing.assert_allclose(res.r, -1.0, atol=1e-12)
    assert res.summary.fraction_negative == 1.0 and res.summary.mean == pytest.approx(-1.0)
    assert res.p_fisher_t == 0.0  # identical non-zero z: infinite t statistic
    assert res.p_wilcoxon == pytest.approx(2 / 2**12)  # exact two-sided p, all 12 signs negative


def test_short_constant_and_censored_examples_are_counted_and_excluded():
    entropy, halt_logits, rp, lengths = step_batch(-2, n=10)
    rp[0] = 4  # too short: rp < 5
    lengths[0] = 8
    entropy[1] = 2.0  # constant entropy: no collapse, r undefined
    halt_logits[2] = -1.0  # q never crosses 0.5 (and is constant)
    halt_logits[3, : rp[3] + 1] = np.linspace(-3.0, -1.0, rp[3] + 1)  # never crosses, not constant
    halt_logits[4] = -1.0
    entropy[4] = 2.0  # both censoring reasons in one example

    res = coupling(entropy, halt_logits, rp, lengths, n_boot=100)
    assert (res.n_short, res.n_constant, res.summary.n) == (1, 3, 6)
    assert np.isfinite(res.summary.mean)

    thr = threshold_lag(entropy, halt_logits, rp, lengths, n_boot=100)
    assert (thr.n_short, thr.n_no_collapse, thr.n_no_crossing, thr.n_censored) == (1, 2, 3, 4)
    assert thr.summary.n == 5 and np.all(thr.tau == -2)

    xc = cross_correlation(entropy, halt_logits, rp, lengths)
    assert (xc.n_short, xc.n_constant, xc.n) == (1, 3, 6)


def test_crossing_after_rp_is_censored_in_the_lag_window():
    entropy, halt_logits, rp, lengths = step_batch(-2, n=6)
    halt_logits[0, : rp[0] + 1] = -3.0  # q rises only after rp
    thr = threshold_lag(entropy, halt_logits, rp, lengths, n_boot=100)
    assert thr.n_no_crossing == 1 and thr.summary.n == 5


def test_no_usable_example_gives_undefined_statistics_not_an_error():
    entropy, halt_logits, rp, lengths = step_batch(-2, n=4)
    res = coupling(entropy, halt_logits, np.full(4, 3), lengths, n_boot=100)
    assert res.summary.n == 0 and res.n_short == 4 and np.isnan(res.summary.mean)
    assert res.to_dict()["mean"] is None
    xc = cross_correlation(entropy, halt_logits, np.full(4, 3), lengths)
    assert xc.n == 0 and xc.lag_argmin is None and np.isnan(xc.c).all()


def test_to_dict_is_strict_json():
    entropy, halt_logits, rp, lengths = step_batch(-2, n=8)
    for result in (
        coupling(entropy, halt_logits, rp, lengths, n_boot=100),
        threshold_lag(entropy, halt_logits, rp, lengths, n_boot=100),
        cross_correlation(entropy, halt_logits, rp, lengths),
    ):
        json.dumps(result.to_dict(), allow_nan=False)
    convention = threshold_lag(entropy, halt_logits, rp, lengths, n_boot=100).to_dict()["sign_convention"]
    assert convention == "tau = first(q > 0.5) - first(collapse); tau < 0: the halt signal leads"


def test_f1_on_a_hand_computed_case():
    pred = np.array([True, True, False, False, True, False])
    pos = np.array([True, False, True, False, True, True])
    s = binary_f1(pred, pos)  # tp 2, fp 1, fn 2
    assert (s.tp, s.fp, s.fn) == (2, 1, 2)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(1 / 2)
    assert s.f1 == pytest.approx(4 / 7)
    assert np.isnan(binary_f1(np.zeros(3, bool), np.zeros(3, bool)).f1)


def test_auroc_hand_computed_with_and_without_ties():
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True])) == pytest.approx(0.75)
    # pairs (pos, neg): (1 vs 1) counts 1/2, (2 vs 1) counts 1 -> 0.75
    assert auroc(np.array([1.0, 1.0, 2.0]), np.array([True, False, True])) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="positive"):
        auroc(np.array([0.1, 0.2]), np.array([True, True]))


def test_auroc_matches_brute_force_pair_count():
    rng = np.random.default_rng(11)
    scores = rng.integers(0, 6, size=60).astype(float)  # many ties
    pos = rng.random(60) < 0.4
    pairs = [(s_p > s_n) + 0.5 * (s_p == s_n) for s_p, s_n in itertools.product(scores[pos], scores[~pos])]
    assert auroc(scores, pos) == pytest.approx(np.mean(pairs), abs=1e-12)


def halting_case():
    """Three examples, L = 8, rp = 4, HALT at 5, EOS at 6, PAD at 7; labels 0 0 0.5 0.5 1 1 | 0 0 outside the mask."""
    labels = np.tile([0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 0.0, 0.0], (3, 1))
    mask = np.tile([True] * 6 + [False] * 2, (3, 1))
    logits = np.full((3, 8), -2.0)
    logits[0, 4:] = 2.0  # crosses exactly at rp; also "fires" at EOS and PAD
    logits[1, 3:6] = 2.0  # one early (label 0.5 -> false positive)
    logits[2, 5] = 2.0  # one late
    return logits, labels, mask, np.full(3, 4)


def test_halting_metrics_hand_computed():
    res = halting_metrics(*halting_case())
    # before EOS: positives at 4, 5 per example (6); tp = 2 + 2 + 1, fp = 1, fn = 1
    assert (res.before_eos.tp, res.before_eos.fp, res.before_eos.fn) == (5, 1, 1)
    assert res.before_eos.f1 == pytest.approx(10 / 12)
    # the original's F1 over all 8 positions, positives t >= rp = 4 (EOS and PAD positive, the 0.5 labels at 2, 3
    # negative): example 0 fires 4-7 (tp 4); example 1 fires 3-5 (tp 2, fp 1 at 3, fn 2 at EOS and PAD);
    # example 2 fires at 5 (tp 1, fn 3)
    assert (res.with_pad.tp, res.with_pad.fp, res.with_pad.fn) == (7, 1, 5)
    assert res.with_pad.f1 == pytest.approx(14 / 20)
    assert faithful_halt_f1(halting_case()[0], np.full(3, 4)) == res.with_pad
    np.testing.assert_array_equal(res.stop_error, [0, -1, 1])
    assert (res.early_rate, res.exact_rate, res.late_rate, res.never_rate) == pytest.approx((1 / 3, 1 / 3, 1 / 3, 0))
    json.dumps(res.to_dict(), allow_nan=False)


def test_halting_never_crossing_and_auroc():
    logits, labels, mask, rp = halting_case()
    logits[2] = -2.0 + 0.1 * np.arange(8)  # ranks well but never > 0.5
    res = halting_metrics(logits, labels, mask, rp)
    assert res.never_rate == pytest.approx(1 / 3) and res.stop_error.size == 2
    m, p = logits[mask], labels[mask] == 1.0
    assert res.auroc == pytest.approx(auroc(m, p))
    assert 0.5 < res.auroc <= 1.0


def test_bootstrap_ci_contains_the_mean_and_is_seeded():
    x = np.random.default_rng(1).normal(0.3, 1.0, size=80)
    lo, hi = bootstrap_ci(x, n_boot=2000, seed=7)
    assert lo < x.mean() < hi
    assert (lo, hi) == bootstrap_ci(x, n_boot=2000, seed=7)
    assert (lo, hi) != bootstrap_ci(x, n_boot=2000, seed=8)
    s = summarize(x, n_boot=2000, seed=7)
    assert (s.ci_low, s.ci_high) == (lo, hi) and s.std == pytest.approx(x.std(ddof=1))


def test_fisher_z_test_detects_a_shifted_sample():
    rng = np.random.default_rng(4)
    assert fisher_z_ttest_pvalue(np.tanh(rng.normal(-0.5, 0.3, size=30))) < 1e-6
    assert np.isnan(fisher_z_ttest_pvalue(np.array([0.2])))


def test_aligned_curve_averages_by_offset_from_rp():
    values = np.tile(np.arange(WIDTH, dtype=float), (3, 1))
    rp = np.array([5, 8, 10])
    curve = aligned_curve(values - rp[:, None], rp, lengths=rp + 2, before=7, after=2)
    np.testing.assert_array_equal(curve.offsets, np.arange(-7, 3))
    np.testing.assert_array_equal(curve.count, [2, 2, 3, 3, 3, 3, 3, 3, 3, 0])
    np.testing.assert_allclose(curve.mean[:-1], curve.offsets[:-1])  # value at rp + k is k in every example
    assert np.isnan(curve.mean[-1]) and np.isnan(curve.std[-1])
    np.testing.assert_allclose(curve.std[:-1], 0.0, atol=1e-12)


@pytest.mark.parametrize(
    "change, arg",
    [
        (lambda b: (b[0][:, :5], *b[1:]), "halt_logits"),
        (lambda b: (np.where(b[0] > 2, np.nan, b[0]), *b[1:]), "entropy"),
        (lambda b: (*b[:2], b[2].astype(float), b[3]), "result_pos"),
        (lambda b: (*b[:2], b[3], b[3]), "result_pos"),
        (lambda b: (*b[:3], b[3] + WIDTH), "lengths"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(change, arg):
    batch = step_batch(-2, n=5)
    with pytest.raises(ValueError, match=arg):
        coupling(*change(batch), n_boot=100)


def test_bad_halt_labels_raise():
    logits, labels, mask, rp = halting_case()
    labels[0, 1] = 0.3
    with pytest.raises(ValueError, match="halt_labels"):
        halting_metrics(logits, labels, mask, rp)
    with pytest.raises(ValueError, match="halt_mask"):
        halting_metrics(logits, halting_case()[1], mask.astype(int), rp)


def test_plots_write_png_files(tmp_path):
    entropy, halt_logits, rp, lengths = step_batch(-2, n=12)
    r = coupling(entropy, halt_logits, rp, lengths, n_boot=100).r
    xc = cross_correlation(entropy, halt_logits, rp, lengths)
    xd = cross_correlation(entropy, halt_logits, rp, lengths, differenced=True)
    grid = np.arange(30, dtype=float).reshape(6, 5) / 30
    grid[0, 0] = np.nan
    paths = [
        plot_aligned_curves(entropy, halt_logits, rp, lengths, tmp_path / "aligned.png"),
        plot_cross_correlation(xc.lags, xc.c, tmp_path / "xcorr.png", c_differenced=xd.c),
        plot_sweep_heatmap(grid, [0, 0.01, 0.05, 0.1, 0.2, 0.5], [0, 0.05, 0.1, 0.2, 0.4],
                           tmp_path / "sub" / "sweep.png", label="mean r"),
        plot_r_histogram(r, tmp_path / "r_hist.png"),
    ]
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with pytest.raises(ValueError, match="path"):
        plot_r_histogram(r, tmp_path / "r_hist.pdf")


# ---- the original work's statistics (pna.analysis.faithful) ----

FAITHFUL_WIDTH = 24


@pytest.mark.parametrize("state,bits", [(np.ones(16), 4.0), (np.eye(16)[3], 0.0), (np.r_[np.ones(2), np.zeros(14)], 1.0),
                                         (np.zeros(16), 0.0)], ids=["uniform-16", "one-hot", "two-equal", "zero"])
def test_energy_entropy_in_bits_of_the_channel_mean_state(state, bits):
    assert energy_entropy_bits(state) == pytest.approx(bits, abs=1e-6)
    scaled = energy_entropy_bits(np.stack([state, -3.0 * state]))  # scale and sign free
    np.testing.assert_allclose(scaled, bits, atol=1e-6)


def window_batch(rp: int, n: int, entropy_row, q_row):
    """n identical examples of one window 0..rp (padded to FAITHFUL_WIDTH with finite filler)."""
    entropy = np.ones((n, FAITHFUL_WIDTH))
    logits = np.zeros((n, FAITHFUL_WIDTH))
    entropy[:, : rp + 1] = entropy_row
    logits[:, : rp + 1] = logit(np.clip(q_row, 1e-6, 1 - 1e-6))
    return entropy, logits, np.full(n, rp), np.full(n, rp + 3)


def test_entropy_that_never_halves_gives_sc_at_the_default_and_tau_hr_minus_L():
    """SE falls 2.0 -> 1.1 (never below 1.0 = half of SE[0]); q crosses 0.5 at rp - 1 = 8: sc = L = 10, hr = 8."""
    rp = 9
    se = np.linspace(2.0, 1.1, rp + 1)
    q = np.where(np.arange(rp + 1) >= rp - 1, 0.9, 0.1)
    res = faithful_metrics(*window_batch(rp, 4, se, q))
    assert original_threshold_crossings(se, q) == (10, 8)
    np.testing.assert_array_equal(res.sc, 10)
    np.testing.assert_array_equal(res.tau, 8 - 10)
    assert (res.n_sc_default, res.n_hr_default) == (4, 0)
    d = res.to_dict()["tau"]
    assert d["mean"] == -2.0 and d["n_sc_default"] == 4 and d["n_both_default"] == 0


def test_halving_entropy_and_a_never_crossing_halt_both_count_every_example():
    """Nothing is censored: SE halves at 3, q never exceeds 0.5 -> hr = L = 8, tau = 8 - 3 = 5."""
    rp = 7
    se = np.array([4.0, 3.0, 2.5, 1.9, 1.0, 1.0, 1.0, 1.0])
    q = np.linspace(0.1, 0.5, rp + 1)  # reaches 0.5 but never exceeds it
    res = faithful_metrics(*window_batch(rp, 3, se, q))
    assert res.n == 3 and (res.n_sc_default, res.n_hr_default) == (0, 3)
    np.testing.assert_array_equal(res.tau, 5)


def test_r_is_scipys_pearson_and_constant_windows_leave_r_but_enter_tau():
    rng = np.random.default_rng(0)
    entropy = rng.uniform(1, 4, size=(6, FAITHFUL_WIDTH))
    logits = rng.normal(size=(6, FAITHFUL_WIDTH))
    rp = np.array([3, 5, 8, 12, 20, 9])  # the first is short (rp < 5)
    entropy[5] = 2.0  # constant entropy: r undefined
    res = faithful_metrics(entropy, logits, rp, rp + 1)
    want = [pearsonr(entropy[i, : rp[i] + 1], 1 / (1 + np.exp(-logits[i, : rp[i] + 1])))[0] for i in range(1, 5)]
    np.testing.assert_allclose(res.r, want, atol=1e-12)
    assert res.n_short == 1 and res.n == 5 and res.r.size == 4
    assert res.to_dict()["r"]["std"] == pytest.approx(np.std(want))  # ddof 0, as the original


def test_original_xcorr_is_correlate_over_n_on_the_original_axis():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=12), rng.normal(size=12)
    zx, zy = (x - x.mean()) / x.std(), (y - y.mean()) / y.std()
    by_hand = [sum(zx[l] * zy[l - k] for l in range(12) if 0 <= l - k < 12) / 12 for k in range(-5, 6)]
    np.testing.assert_allclose(original_xcorr(x, y), by_hand, atol=1e-12)
    assert np.isnan(original_xcorr(np.ones(12), y)).all()
    assert np.isnan(original_xcorr(x[:3], y[:3])[[0, 1, 2, 8, 9, 10]]).all()  # |k| > n - 1


def test_a_halt_signal_two_steps_ahead_peaks_at_plus_two_on_the_original_axis_and_minus_two_on_designs():
    """q rises at t = 6, SE falls at t = 8 (the halt signal leads by 2): the original's level argmin is +2, its
    derivative argmax +2; DESIGN's axis (lead_*, and the corrected cross_correlation) gives -2."""
    rp = 14
    t = np.arange(rp + 1)
    se = np.where(t < 8, 3.0, 1.0)
    q = np.where(t < 6, 0.1, 0.9)
    args = window_batch(rp, 5, se, q)
    res = faithful_metrics(*args)
    assert (res.raw_peak_lag, res.deriv_peak_lag) == (2, 2)
    d = res.to_dict()["xcorr"]
    assert (d["lead_raw"], d["lead_deriv"]) == (-2, -2)
    assert cross_correlation(*args).lag_argmin == -2
    np.testing.assert_array_equal(res.tau, 6 - 8)  # sc = 8 (3.0 -> 1.0 halves), hr = 6


def test_side_by_side_reports_both_definitions_as_json():
    rp = 14
    t = np.arange(rp + 1)
    rng = np.random.default_rng(2)
    entropy, logits, rps, lengths = window_batch(rp, 6, np.where(t < 8, 3.0, 1.0), np.where(t < 6, 0.1, 0.9))
    entropy = entropy + 0.01 * rng.standard_normal(entropy.shape)
    both = side_by_side(entropy, entropy, logits, rps, lengths, n_boot=50)
    d = json.loads(json.dumps(both.to_dict(), allow_nan=False))
    assert d["corrected"]["tau"]["mean"] == d["faithful"]["tau"]["mean"] == -2.0
    assert d["corrected"]["r"]["n"] == d["faithful"]["r"]["n_valid"] == 6


def test_seed_distribution():
    d = seed_distribution([-0.836, -0.725, -0.123])
    assert d["n"] == 3 and d["min"] == -0.836 and d["max"] == -0.123
    assert d["mean"] == pytest.approx(-0.56133333) and d["sd"] == pytest.approx(np.std([-0.836, -0.725, -0.123], ddof=1))
    assert seed_distribution([0.5])["sd"] is None
    with pytest.raises(ValueError, match="^values:"):
        seed_distribution([])
    with pytest.raises(ValueError, match="^max_lag:"):
        faithful_metrics(*window_batch(9, 1, np.ones(10), np.ones(10) * 0.2), max_lag=-1)


class AnswerRevealingModel(torch.nn.Module):
    """Stub for the Phase-8 statistic: its post-norm hidden state carries the answer (+-1) with a weight w growing
    from 0 at position 0 to 1 at rp, and its halt logit 6w - 3 rises with it; so the probe's answer entropy falls
    while the halt confidence rises, both monotone in w."""

    def __init__(self) -> None:
        super().__init__()
        self.norm_f = torch.nn.Identity()

    def forward(self, input_ids):
        from types import SimpleNamespace
        b, length = input_ids.shape
        rp = (input_ids == TOKENIZER.result_id).float().argmax(dim=1).clamp(min=1)
        answer = input_ids.gather(1, (rp + 1).clamp(max=length - 1)[:, None]).squeeze(1) == TOKENIZER.encode("1")[0]
        t = torch.arange(length)[None, :].float()
        weight = (t / rp[:, None]).clamp(max=1.0)
        hidden = torch.stack([(2.0 * answer.float() - 1.0)[:, None] * 4.0 * weight, torch.ones(b, length)], dim=-1)
        self.norm_f(hidden)
        return SimpleNamespace(halt_logits=6.0 * weight - 3.0)


def test_phase8_probe_statistic_on_a_model_that_reveals_its_answer():
    train = make_split("parity", "train", n=200, protocol="faithful")
    test = make_split("parity", "test", n=80, protocol="faithful")
    res = answer_entropy_r(AnswerRevealingModel(), train, test, ProbeConfig(lr=0.05))  # few steps: a larger lr
    kept = [test[i] for i in first_answer_in(test)]
    assert res.n == sum(ex.result_pos >= 3 for ex in kept) and res.r.size == res.n
    assert res.probe_accuracy == 1.0
    assert res.to_dict()["mean"] < -0.8 and res.to_dict()["fraction_negative"] == 1.0


def test_paper_numbers_name_what_they_measured():
    from pna.paper import CONTEXT_KEYS, ORIGINAL_BETA_01_SPREAD, ROW_KEYS, paper_number

    assert ORIGINAL_BETA_01_SPREAD[0] == paper_number("ssm_r").value == min(ORIGINAL_BETA_01_SPREAD)
    assert "probe" in paper_number("transformer_r").note and "NOT the SSM's statistic" in paper_number("transformer_r").note
    assert "POOLING" in paper_number("free_generation_accuracy").note and "88.4" in paper_number("free_generation_accuracy").text
    assert all(paper_number(key).ours for key in ROW_KEYS + CONTEXT_KEYS)  # our function of the same definition
    spread = seed_distribution(list(ORIGINAL_BETA_01_SPREAD))
    assert (spread["min"], spread["max"], spread["n"]) == (-0.836, -0.123, 7)
    with pytest.raises(ValueError, match="^key:"):
        paper_number("ssm_tau")
