"""Bad input to selective_scan and selective_state_update raises a ValueError that names the argument."""
from __future__ import annotations

import pytest
import torch

import pna_kernels
from pna_kernels.validation import MAX_STATE_DIM

BATCH, DIM, LENGTH, DSTATE, GROUPS = 2, 4, 5, 3, 2

SCAN_TENSORS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "halt_weight", "halt_bias", "initial_state")
SCAN_ACTIVATIONS = ("u", "delta", "B", "C", "z", "initial_state")
STEP_TENSORS = ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias", "halt_weight", "halt_bias")


def scan_inputs(dstate: int = DSTATE) -> dict:
    gen = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=gen)

    return {
        "u": r(BATCH, DIM, LENGTH), "delta": r(BATCH, DIM, LENGTH), "A": -torch.rand(DIM, dstate, generator=gen),
        "B": r(BATCH, GROUPS, dstate, LENGTH), "C": r(BATCH, GROUPS, dstate, LENGTH), "D": r(DIM),
        "z": r(BATCH, DIM, LENGTH), "delta_bias": r(DIM), "halt_weight": r(DIM, dstate), "halt_bias": r(1)[0],
        "initial_state": r(BATCH, DIM, dstate),
    }


def scan(**kw):
    x = scan_inputs()
    x.update(kw)
    positional = [x.pop(k) for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    return pna_kernels.selective_scan(*positional, backend=x.pop("backend", "reference"), **x)


def step_inputs() -> dict:
    gen = torch.Generator().manual_seed(1)

    def r(*shape):
        return torch.randn(*shape, generator=gen)

    return {
        "state": r(BATCH, DIM, DSTATE), "x": r(BATCH, DIM), "dt": r(BATCH, DIM), "A": -torch.rand(DIM, DSTATE),
        "B": r(BATCH, GROUPS, DSTATE), "C": r(BATCH, GROUPS, DSTATE), "D": r(DIM), "z": r(BATCH, DIM),
        "dt_bias": r(DIM), "halt_weight": r(DIM, DSTATE), "halt_bias": r(1)[0],
    }


def step(**kw):
    x = step_inputs()
    x.update(kw)
    positional = [x.pop(k) for k in ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias")]
    return pna_kernels.selective_state_update(*positional, backend=x.pop("backend", "reference"), **x)


def wrong_shape(name: str, t: torch.Tensor) -> torch.Tensor:
    """One more entry along the last dimension (along D for A, whose last dimension defines N; a 0-d tensor
    becomes a vector of two)."""
    if t.dim() == 0:
        return torch.zeros(2)
    shape = list(t.shape)
    shape[0 if name == "A" else -1] += 1
    return torch.zeros(shape)


def test_valid_inputs_pass():
    scan()
    step()


@pytest.mark.parametrize("name", [n for n in SCAN_TENSORS if n != "u"])  # u defines the shapes
def test_scan_wrong_shape(name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        scan(**{name: wrong_shape(name, scan_inputs()[name])})


@pytest.mark.parametrize("name", SCAN_TENSORS)
def test_scan_integer_dtype(name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        scan(**{name: scan_inputs()[name].to(torch.int32)})


@pytest.mark.parametrize("name", ("delta", "B", "C", "z"))
def test_scan_dtype_differs_from_u(name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        scan(**{name: scan_inputs()[name].double()})


@pytest.mark.parametrize("name", [n for n in SCAN_TENSORS if n != "u"])
def test_scan_wrong_device(name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        scan(**{name: scan_inputs()[name].to("meta")})


@pytest.mark.parametrize("name", ("u", "A", "B", "C"))
def test_scan_wrong_rank(name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        scan(**{name: scan_inputs()[name][..., None, None]})


def test_scan_empty_dimension():
    x = scan_inputs()
    with pytest.raises(ValueError, match="^u:"):
        scan(u=x["u"][:, :, :0], delta=x["delta"][:, :, :0], z=x["z"][:, :, :0], B=x["B"][..., :0],
             C=x["C"][..., :0])


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", SCAN_TENSORS)
def test_scan_non_finite(name, value):
    bad = scan_inputs()[name].clone()
    bad.view(-1)[-1] = value
    with pytest.raises(ValueError, match=f"^{name}: contains NaN or Inf"):
        scan(**{name: bad})


@pytest.mark.parametrize("name", SCAN_ACTIVATIONS)
def test_scan_check_finite_false_skips_activations(name):
    bad = scan_inputs()[name].clone()
    bad.view(-1)[0] = float("nan")
    out = scan(**{name: bad}, check_finite=False).out
    assert torch.isnan(out).any()


@pytest.mark.parametrize("name", [n for n in SCAN_TENSORS if n not in SCAN_ACTIVATIONS])
def test_scan_check_finite_false_still_checks_parameters(name):
    bad = scan_inputs()[name].clone()
    bad.view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match=f"^{name}: contains NaN or Inf"):
        scan(**{name: bad}, check_finite=False)


def test_scan_state_size_limit():
    big = scan_inputs(MAX_STATE_DIM + 1)
    with pytest.raises(ValueError, match="^A:.*256"):
        scan(**{k: big[k] for k in ("A", "B", "C", "halt_weight", "initial_state")})
    largest = scan_inputs(MAX_STATE_DIM)
    scan(**{k: largest[k] for k in ("A", "B", "C", "halt_weight", "initial_state")})


@pytest.mark.parametrize("name", ("B", "C"))
def test_scan_groups_must_divide_dim(name):
    with pytest.raises(ValueError, match=f"^{name}: number of groups G = 3"):
        scan(**{name: torch.zeros(BATCH, 3, DSTATE, LENGTH)})


def test_scan_b_and_c_groups_must_match():
    with pytest.raises(ValueError, match="^C: expected the number of groups of B"):
        scan(C=torch.randn(BATCH, 1, DSTATE, LENGTH))


def test_scan_bad_backend():
    with pytest.raises(ValueError, match="^backend:"):
        scan(backend="no-such-backend")


def test_scan_delta_softplus_must_be_bool():
    with pytest.raises(ValueError, match="^delta_softplus:"):
        scan(delta_softplus=1)


@pytest.mark.parametrize("name", [n for n in STEP_TENSORS if n != "x"])  # x defines the shapes
def test_step_wrong_shape(name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        step(**{name: wrong_shape(name, step_inputs()[name])})


@pytest.mark.parametrize("name", ("x", "A", "B", "C"))
def test_step_wrong_rank(name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        step(**{name: step_inputs()[name][..., None, None]})


@pytest.mark.parametrize("name", STEP_TENSORS)
def test_step_integer_dtype(name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        step(**{name: step_inputs()[name].to(torch.int32)})


@pytest.mark.parametrize("name", ("state", "dt", "B", "C", "z"))
def test_step_dtype_differs_from_x(name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        step(**{name: step_inputs()[name].double()})


@pytest.mark.parametrize("name", [n for n in STEP_TENSORS if n != "x"])
def test_step_wrong_device(name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        step(**{name: step_inputs()[name].to("meta")})


def test_step_state_must_be_contiguous():
    state = step_inputs()["state"].transpose(1, 2).contiguous().transpose(1, 2)
    with pytest.raises(ValueError, match="^state: must be contiguous"):
        step(state=state)


@pytest.mark.parametrize("name", ("B", "C"))
def test_step_groups_must_divide_dim(name):
    with pytest.raises(ValueError, match=f"^{name}: number of groups G = 3"):
        step(**{name: torch.zeros(BATCH, 3, DSTATE)})


def test_step_b_and_c_groups_must_match():
    with pytest.raises(ValueError, match="^C: expected the number of groups of B"):
        step(C=torch.randn(BATCH, 1, DSTATE))


def test_step_state_size_limit():
    n = MAX_STATE_DIM + 1
    with pytest.raises(ValueError, match="^A:.*256"):
        step(state=torch.zeros(BATCH, DIM, n), A=-torch.ones(DIM, n), B=torch.zeros(BATCH, n),
             C=torch.zeros(BATCH, n), halt_weight=torch.zeros(DIM, n))


def test_step_bad_backend():
    with pytest.raises(ValueError, match="^backend:"):
        step(backend="no-such-backend")


def test_step_dt_softplus_must_be_bool():
    with pytest.raises(ValueError, match="^dt_softplus:"):
        step(dt_softplus="yes")
