"""The "torch" backend (pna_kernels.parallel) against the float64 oracle, forward and every gradient."""
from __future__ import annotations

import pytest
import torch

from pna_kernels import parallel, reference
from pna_kernels.parallel import linear_scan, selective_scan_parallel
from pna_kernels.reference import selective_scan_ref
from pna_kernels.testing import RTOL, assert_close_rel, assert_matches_oracle, random_scan_inputs
from pna_kernels.contract import ScanResult, fields_of
from pna_kernels.validation import check_scan_inputs


# Long sequences, many doubling levels of the log-depth scan (the short shapes every backend shares are in
# tests/test_backends.py).
SHAPES = [
    # batch, D, L, N, groups, grouped B/C, z, initial_state, softplus
    (1, 3, 1, 1, 1, False, True, True, True),
    (2, 6, 37, 5, 3, True, True, False, True),
    (3, 5, 64, 7, 1, False, False, True, False),
    (2, 8, 129, 16, 2, True, True, True, True),
    (1, 4, 300, 3, 4, True, False, True, True),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("batch,dim,length,dstate,groups,grouped,with_z,with_init,softplus", SHAPES)
def test_torch_backend_matches_oracle(dtype, batch, dim, length, dstate, groups, grouped, with_z, with_init,
                                      softplus):
    x = random_scan_inputs(batch, dim, length, dstate, groups=groups, dtype=dtype, seed=length, with_z=with_z,
                           with_initial_state=with_init, grouped_bc=grouped, delta_softplus=softplus)
    assert_matches_oracle(x, "torch", softplus, RTOL[dtype], with_channel_mean=True)

@pytest.mark.parametrize("grouped", [True, False])
def test_all_states_match_oracle(grouped):
    x = random_scan_inputs(2, 6, 23, 4, groups=2 if grouped else 1, dtype=torch.float64, seed=4,
                           grouped_bc=grouped)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, x["halt_weight"],
            x["halt_bias"], x["initial_state"])
    for name, got, want in zip(("out", "entropy", "halt", "last_state", "states"), selective_scan_parallel(*args),
                               selective_scan_ref(*args)):
        assert_close_rel(name, got, want, RTOL[torch.float64])


def test_b_and_c_with_different_group_counts():
    x = random_scan_inputs(2, 6, 11, 4, groups=3, dtype=torch.float64, seed=9)
    C = random_scan_inputs(2, 6, 11, 4, groups=2, dtype=torch.float64, seed=10)["C"]
    args = (x["u"], x["delta"], x["A"], x["B"], C, x["D"], x["z"], x["delta_bias"], True)
    for name, got, want in zip(("out", "entropy", "halt", "last_state", "states"), selective_scan_parallel(*args),
                               selective_scan_ref(*args)):
        assert_close_rel(name, got, want, RTOL[torch.float64])


def test_optional_inputs_absent_match_oracle():
    x = random_scan_inputs(2, 4, 17, 3, dtype=torch.float32, seed=8, with_z=False, with_initial_state=False)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"])
    got, want = selective_scan_parallel(*args), selective_scan_ref(*args)
    for name, g, w in zip(("out", "entropy", "halt", "last_state", "states"), got, want):
        assert_close_rel(name, g, w, RTOL[torch.float32])
    assert torch.equal(got[2], torch.zeros_like(got[2]))


def test_vanishing_decays_stay_finite():
    """Decays that underflow to 0 (and decays of 1) over a long sequence: no division, nothing non-finite."""
    x = random_scan_inputs(1, 4, 200, 3, dtype=torch.float32, seed=2)
    A = x["A"].clone()
    A[0] = -80.0  # exp(dt * A) underflows in float32
    A[1] = -1e-7  # almost no decay
    args = (x["u"], x["delta"] + 4.0, A, x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, x["halt_weight"],
            x["halt_bias"], x["initial_state"])
    got, want = selective_scan_parallel(*args), selective_scan_ref(*args)
    for name, g, w in zip(("out", "entropy", "halt", "last_state", "states"), got, want):
        assert torch.isfinite(g).all(), name
        assert_close_rel(name, g, w, RTOL[torch.float32])


@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_gradients(reverse):
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(2, 9, 3, generator=gen, dtype=torch.float64).requires_grad_(True)
    b = torch.randn(2, 9, 3, generator=gen, dtype=torch.float64).requires_grad_(True)
    h0 = torch.randn(2, 3, generator=gen, dtype=torch.float64).requires_grad_(True)

    def fn(a, b, h0):
        return linear_scan(a, b, h0, reverse)

    assert torch.autograd.gradcheck(fn, (a, b, h0))
    assert torch.autograd.gradgradcheck(fn, (a, b, h0))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [1, 2, 5, 16, 33])
def test_linear_scan_matches_a_loop(length, reverse):
    gen = torch.Generator().manual_seed(length)
    a = torch.rand(2, length, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(2, length, 4, generator=gen, dtype=torch.float64)
    h0 = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    want = torch.empty_like(b)
    h = h0
    for t in reversed(range(length)) if reverse else range(length):
        h = a[:, t] * h + b[:, t]
        want[:, t] = h
    torch.testing.assert_close(linear_scan(a, b, h0, reverse), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "a_shape,b_shape,h0_shape,name",
    [((2, 5, 3), (2, 5, 4), (2, 3), "b"), ((2, 0, 3), (2, 0, 3), (2, 3), "a"), ((2, 5, 3), (2, 5, 3), (2, 4), "h0")],
)
def test_linear_scan_rejects_bad_shapes(a_shape, b_shape, h0_shape, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        linear_scan(torch.ones(a_shape), torch.ones(b_shape), torch.ones(h0_shape))


def test_backend_forward_contract_matches_reference_backend():
    """checkpoints and entropy sums, which the fused backends' backward reads, agree with the reference's, and
    so does the channel mean."""
    args = check_scan_inputs(**random_scan_inputs(2, 4, 10, 3, dtype=torch.float64, seed=6), delta_softplus=True,
                             chunk_size=4, with_channel_mean=True)
    got, want = parallel.scan_forward(args), reference.scan_forward(args)
    for name in fields_of(ScanResult):
        g, w = getattr(got, name), getattr(want, name)
        assert g.shape == w.shape, name
        assert_close_rel(name, g, w, RTOL[torch.float64])
