"""The oracle itself: against an independent scalar float64 loop, entropy edge cases, gradcheck, decode step."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pna_kernels
from pna_kernels.reference import (
    entropy_sums,
    normalized_entropy,
    selective_scan_ref,
    selective_state_update_ref,
    state_entropy,
)
from pna_kernels.testing import random_scan_inputs, run_scan


def naive_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, halt_weight, halt_bias, initial_state):
    """The fused op written out one scalar at a time in numpy float64; B, C are (batch, G, N, L)."""
    batch, dim, length = u.shape
    dstate = A.shape[1]
    per_group = dim // B.shape[1]
    out = np.zeros((batch, dim, length))
    entropy = np.zeros((batch, length))
    halt = np.zeros((batch, length))
    states = np.zeros((batch, length, dim, dstate))
    for b in range(batch):
        h = np.zeros((dim, dstate)) if initial_state is None else initial_state[b].copy()
        for t in range(length):
            for d in range(dim):
                g = d // per_group
                x = delta[b, d, t] + (0.0 if delta_bias is None else delta_bias[d])
                dt = math.log1p(math.exp(x)) if delta_softplus else x
                y = 0.0
                for n in range(dstate):
                    h[d, n] = math.exp(dt * A[d, n]) * h[d, n] + dt * B[b, g, n, t] * u[b, d, t]
                    y += C[b, g, n, t] * h[d, n]
                if D is not None:
                    y += D[d] * u[b, d, t]
                if z is not None:
                    zz = z[b, d, t]
                    y *= zz / (1.0 + math.exp(-zz))
                out[b, d, t] = y
            s1 = s2 = 0.0
            g_t = 0.0 if halt_bias is None else float(halt_bias)
            for d in range(dim):
                for n in range(dstate):
                    e = h[d, n] * h[d, n]
                    s1 += e
                    if e > 0:
                        s2 += e * math.log(e)
                    if halt_weight is not None:
                        g_t += halt_weight[d, n] * h[d, n]
            entropy[b, t] = math.log(s1) - s2 / s1 if s1 > 0 else 0.0
            halt[b, t] = g_t
            states[b, t] = h
    return out, entropy, halt, states[:, -1], states


def _np(t):
    return None if t is None else t.detach().numpy()


CASES = [
    # groups, grouped_bc, with z, with D, with delta_bias, with initial_state, delta_softplus, with halt
    (1, False, False, False, False, False, False, False),
    (1, False, True, True, True, True, True, True),
    (3, True, True, False, True, False, True, True),
    (2, True, False, True, False, True, False, True),
    (6, True, True, True, True, True, False, False),
    (1, True, False, False, True, True, True, True),
]


@pytest.mark.parametrize("groups,grouped,with_z,with_d,with_bias,with_init,softplus,with_halt", CASES)
def test_oracle_matches_scalar_loop(groups, grouped, with_z, with_d, with_bias, with_init, softplus, with_halt):
    x = random_scan_inputs(2, 6, 7, 5, groups=groups, dtype=torch.float64, seed=groups + 10 * with_z,
                           with_z=with_z, with_initial_state=with_init, grouped_bc=grouped)
    D = x["D"] if with_d else None
    bias = x["delta_bias"] if with_bias else None
    hw, hb = (x["halt_weight"], x["halt_bias"]) if with_halt else (None, None)
    got = selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"], D, x["z"], bias, softplus, hw, hb,
                             x["initial_state"])
    B4 = x["B"] if grouped else x["B"][:, None]
    C4 = x["C"] if grouped else x["C"][:, None]
    want = naive_scan(_np(x["u"]), _np(x["delta"]), _np(x["A"]), _np(B4), _np(C4), _np(D), _np(x["z"]),
                      _np(bias), softplus, _np(hw), _np(hb), _np(x["initial_state"]))
    for name, g, w in zip(("out", "entropy", "halt", "last_state", "states"), got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-10, atol=1e-12, err_msg=name)


def test_zero_state_has_zero_entropy_and_finite_gradient():
    h = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    H = state_entropy(h)
    H.backward()
    assert H.item() == 0.0
    assert torch.isfinite(h.grad).all()


def test_zero_input_scan_has_zero_entropy_and_finite_gradients():
    x = random_scan_inputs(1, 4, 6, 3, dtype=torch.float64, with_initial_state=False)
    x["u"] = torch.zeros_like(x["u"])
    leaves = {k: v.requires_grad_(True) for k, v in x.items() if v is not None}
    res = pna_kernels.selective_scan(
        leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], leaves["D"], leaves["z"],
        leaves["delta_bias"], True, True, halt_weight=leaves["halt_weight"], halt_bias=leaves["halt_bias"],
        backend="reference",
    )
    assert torch.equal(res.entropy, torch.zeros_like(res.entropy))
    (res.out.sum() + res.entropy.sum() + res.halt_logits.sum() + res.last_state.sum()).backward()
    for name, t in leaves.items():
        assert torch.isfinite(t.grad).all(), name


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e200], ids=["nan", "inf", "overflow"])
def test_non_finite_state_has_nan_entropy(value):
    """A state holding NaN or Inf, or one whose energy overflows, has no entropy: NaN, never a finite number."""
    h = torch.ones(3, 4, dtype=torch.float64)
    h[1, 2] = value
    assert torch.isnan(state_entropy(h)).item()


def test_single_entry_state_has_zero_entropy():
    h = torch.zeros(5, 7, dtype=torch.float64)
    h[3, 2] = -2.5
    assert state_entropy(h).item() == pytest.approx(0.0, abs=1e-15)


def test_even_energy_has_maximal_entropy():
    dim, dstate = 6, 4
    signs = torch.where(torch.arange(dim * dstate) % 3 == 0, -1.0, 1.0).to(torch.float64)
    h = (0.7 * signs).reshape(dim, dstate)
    H = state_entropy(h)
    assert H.item() == pytest.approx(math.log(dim * dstate), rel=1e-14)
    assert normalized_entropy(H, dim * dstate).item() == pytest.approx(1.0, rel=1e-14)


def test_normalized_entropy_rejects_a_single_state():
    with pytest.raises(ValueError, match="num_states"):
        normalized_entropy(torch.tensor(0.0), 1)


def test_entropy_gradient_matches_closed_form():
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    state_entropy(h).sum().backward()
    with torch.no_grad():
        e = h * h
        s1, s2 = entropy_sums(h)
        closed = 2 * h * (s2[:, None, None] / s1[:, None, None] - torch.log(e)) / s1[:, None, None]
    torch.testing.assert_close(h.grad, closed, rtol=1e-12, atol=1e-14)


def test_entropy_gradient_is_zero_at_a_zero_entry():
    h = torch.tensor([[0.0, 1.0], [2.0, -0.5]], dtype=torch.float64, requires_grad=True)
    state_entropy(h).backward()
    assert h.grad[0, 0].item() == 0.0
    assert torch.isfinite(h.grad).all()


@pytest.mark.parametrize("groups,grouped,softplus", [(2, True, True), (1, False, False)])
def test_gradcheck_every_input(groups, grouped, softplus):
    x = random_scan_inputs(2, 4, 5, 3, groups=groups, dtype=torch.float64, seed=7, grouped_bc=grouped,
                           delta_softplus=softplus)
    names = [k for k, v in x.items() if v is not None]
    leaves = tuple(x[k].requires_grad_(True) for k in names)

    def fn(*tensors):
        return tuple(run_scan(dict(zip(names, tensors)), "reference", softplus, return_channel_mean=True))

    assert "halt_bias" in names and "initial_state" in names and "halt_weight" in names
    assert torch.autograd.gradcheck(fn, leaves, atol=1e-7, rtol=1e-6)


def test_state_update_matches_scan_steps():
    x = random_scan_inputs(2, 6, 4, 5, groups=3, dtype=torch.float64, seed=5)
    scan = selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True,
                              x["halt_weight"], x["halt_bias"], x["initial_state"])
    state = x["initial_state"].clone()
    for t in range(4):
        y, H, g = selective_state_update_ref(
            state, x["u"][:, :, t], x["delta"][:, :, t], x["A"], x["B"][..., t], x["C"][..., t], x["D"],
            x["z"][:, :, t], x["delta_bias"], True, x["halt_weight"], x["halt_bias"],
        )
        torch.testing.assert_close(y, scan[0][:, :, t], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(H, scan[1][:, t], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g, scan[2][:, t], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(state, scan[4][:, t], rtol=1e-12, atol=1e-12)
