"""Bad input to selective_scan and selective_state_update raises a ValueError that names the argument."""
from __future__ import annotations

import pytest
import torch

import pna_kernels
from pna_kernels.contract import ScanArgs, StateUpdateArgs, tensor_fields
from pna_kernels.testing import random_scan_inputs, state_update_inputs
from pna_kernels.validation import MAX_STATE_DIM

BATCH, DIM, LENGTH, DSTATE, GROUPS = 2, 4, 5, 3, 2

SCAN_TENSORS = tensor_fields(ScanArgs)
SCAN_ACTIVATIONS = ("u", "delta", "B", "C", "z", "initial_state")
STEP_TENSORS = tensor_fields(StateUpdateArgs)


def scan_inputs(dstate: int = DSTATE) -> dict:
    return random_scan_inputs(BATCH, DIM, LENGTH, dstate, groups=GROUPS)


def scan(**kw):
    x = scan_inputs()
    x.update(kw)
    x.setdefault("backend", "reference")
    return pna_kernels.selective_scan(**x)


def step_inputs() -> dict:
    return state_update_inputs(random_scan_inputs(BATCH, DIM, 1, DSTATE, groups=GROUPS, seed=1), 0)


def step(**kw):
    x = step_inputs()
    x.update(kw)
    x.setdefault("backend", "reference")
    return pna_kernels.selective_state_update(**x)


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
def test_scan_check_finite_false_skips_parameters_too(name):
    """check_finite=False reads no tensor data at all (so a GPU call never synchronises): a NaN parameter goes
    through and shows up in the results."""
    bad = scan_inputs()[name].clone()
    bad.view(-1)[0] = float("nan")
    res = scan(**{name: bad}, check_finite=False, return_last_state=True)
    assert any(torch.isnan(t).any() for t in res if t is not None)


@pytest.mark.parametrize("call", ["scan", "step"])
def test_check_finite_false_reads_no_tensor_data(call, monkeypatch):
    """With check_finite=False neither validation nor dispatch turns a tensor into a Python value (the CPU
    stand-in for "no device -> host sync": Tensor.__bool__ / item / tolist raise if called)."""
    def refuse(self, *args):
        raise AssertionError("read tensor data on the host")

    for method in ("__bool__", "item", "tolist", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, method, refuse)
    if call == "scan":
        scan(check_finite=False, backend="torch", halt_bias=0.5)
    else:
        step(check_finite=False, backend="torch", halt_bias=0.5)


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


SCAN_FLAGS = ("delta_softplus", "return_last_state", "return_channel_mean", "check_finite")
NOT_BOOLS = ["no", "", 2, -1, 0.5, None, [True]]


@pytest.mark.parametrize("value", NOT_BOOLS, ids=repr)
@pytest.mark.parametrize("name", SCAN_FLAGS)
def test_scan_flag_must_be_a_bool(name, value):
    with pytest.raises(ValueError, match=f"^{name}: expected a bool"):
        scan(**{name: value})


@pytest.mark.parametrize("name", SCAN_FLAGS)
def test_scan_flag_accepts_one_and_zero_like_true_and_false(name):
    for number, flag in ((1, True), (0, False)):
        as_number, as_bool = scan(**{name: number}), scan(**{name: flag})
        for a, b in zip(as_number, as_bool):
            assert (a is None and b is None) or torch.equal(a, b)


def test_scan_python_float_halt_bias_keeps_float64_precision():
    x = {k: v.double() for k, v in scan_inputs().items() if k != "halt_bias"}
    bias = 0.1 + 1e-12  # not representable in float32
    by_float = scan(**x, halt_bias=bias).halt_logits
    by_tensor = scan(**x, halt_bias=torch.tensor(bias, dtype=torch.float64)).halt_logits
    assert by_float.dtype == torch.float64
    assert torch.equal(by_float, by_tensor)


@pytest.mark.parametrize("backend", ["auto", "reference", "torch"])
def test_scan_on_meta_tensors_gives_shapes(backend):
    """Inputs on the meta device have no data: the call goes through the fake kernels and returns shapes."""
    x = {k: v.to("meta") for k, v in scan_inputs().items()}
    res = scan(**x, backend=backend, return_last_state=True, return_channel_mean=True)
    assert res.out.device.type == "meta" and res.out.shape == (BATCH, DIM, LENGTH)
    assert res.entropy.shape == res.halt_logits.shape == (BATCH, LENGTH)
    assert res.last_state.shape == (BATCH, DIM, DSTATE)
    assert res.channel_mean.shape == (BATCH, LENGTH, DSTATE)


def test_step_on_meta_tensors_gives_shapes():
    x = {k: v.to("meta") for k, v in step_inputs().items()}
    y, entropy, halt, mean = step(**x, return_channel_mean=True)
    assert y.device.type == "meta" and y.shape == (BATCH, DIM)
    assert entropy.shape == halt.shape == (BATCH,)
    assert mean.shape == (BATCH, DSTATE)


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


@pytest.mark.parametrize("value", NOT_BOOLS, ids=repr)
@pytest.mark.parametrize("name", ("dt_softplus", "return_channel_mean", "check_finite"))
def test_step_flag_must_be_a_bool(name, value):
    with pytest.raises(ValueError, match=f"^{name}: expected a bool"):
        step(**{name: value})


def test_step_accepts_one_and_zero_for_dt_softplus():
    for number, flag in ((1, True), (0, False)):
        for a, b in zip(step(dt_softplus=number), step(dt_softplus=flag)):
            assert torch.equal(a, b)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", STEP_TENSORS)
def test_step_non_finite(name, value):
    bad = step_inputs()[name].clone()
    bad.view(-1)[-1] = value
    with pytest.raises(ValueError, match=f"^{name}: contains NaN or Inf"):
        step(**{name: bad})


def test_step_rejects_a_state_that_requires_grad():
    state = step_inputs()["state"].requires_grad_(True)
    with pytest.raises(ValueError, match="^state: requires grad"):
        step(state=state)
    assert state.grad is None and state._version == 0  # untouched


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_check_finite_false_never_syncs_on_gpu(backend):
    """On a GPU, a scan (forward and backward) and a decode step with check_finite=False run without one
    device -> host synchronisation (torch's sync debug mode turns any into an error)."""
    x = {k: v.cuda().requires_grad_(k != "halt_bias") for k, v in scan_inputs().items()}
    s = {k: v.cuda() for k, v in step_inputs().items()}
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        res = pna_kernels.selective_scan(**{**x, "halt_bias": 0.5}, backend=backend, check_finite=False,
                                         return_last_state=True, return_channel_mean=True)
        sum(t.sum() for t in res).backward()
        pna_kernels.selective_state_update(**s, backend=backend, check_finite=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
