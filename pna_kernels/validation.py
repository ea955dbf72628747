"""Input checks for the public ops: every problem is a ValueError that names the argument and what was wrong."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .reference import compute_dtype

MAX_STATE_DIM = 256
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _fail(name: str, message: str) -> None:
    raise ValueError(f"{name}: {message}")


def _check_tensor(name: str, t: object, shape: tuple[int, ...], device: torch.device) -> Tensor:
    if not isinstance(t, Tensor):
        _fail(name, f"expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        _fail(name, f"expected a floating dtype (float16, bfloat16, float32, float64), got {t.dtype}")
    if tuple(t.shape) != shape:
        _fail(name, f"expected shape {shape}, got {tuple(t.shape)}")
    if t.device != device:
        _fail(name, f"expected device {device} (the device of u), got {t.device}")
    return t


def _check_finite(name: str, t: Tensor | None) -> None:
    if t is not None and not bool(torch.isfinite(t).all()):
        _fail(name, "contains NaN or Inf")


def _check_same_dtype(name: str, t: Tensor, dtype: torch.dtype) -> None:
    if t.dtype != dtype:
        _fail(name, f"expected dtype {dtype} (the dtype of u), got {t.dtype}")


@dataclass
class ScanArgs:
    """Validated, normalised inputs of the fused scan.

    B and C are always (batch, G, N, L); parameters are contiguous in the compute dtype; the optional ones
    that have a neutral value (Dskip, delta_bias, halt_weight, halt_bias, initial_state) are materialised so
    that kernels see one signature. `given` records which optional inputs the caller passed, so gradients
    for the others are dropped.
    """

    u: Tensor
    delta: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    D: Tensor
    z: Tensor | None
    delta_bias: Tensor
    halt_weight: Tensor
    halt_bias: Tensor
    initial_state: Tensor
    delta_softplus: bool
    given: dict[str, bool]


def check_scan_inputs(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    halt_weight: Tensor | None,
    halt_bias: Tensor | float | None,
    initial_state: Tensor | None,
    check_finite: bool = True,
) -> ScanArgs:
    """Validate the fused scan's inputs and put them in the canonical form kernels expect."""
    if not isinstance(u, Tensor) or u.dim() != 3:
        _fail("u", f"expected a (batch, D, L) tensor, got {tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__}")
    batch, dim, length = u.shape
    if batch == 0 or dim == 0 or length == 0:
        _fail("u", f"every dimension must be non-zero, got shape {tuple(u.shape)}")
    device = u.device
    _check_tensor("u", u, (batch, dim, length), device)
    _check_tensor("delta", delta, (batch, dim, length), device)
    _check_same_dtype("delta", delta, u.dtype)
    if z is not None:
        _check_tensor("z", z, (batch, dim, length), device)
        _check_same_dtype("z", z, u.dtype)
    if not isinstance(A, Tensor) or A.dim() != 2:
        _fail("A", f"expected a (D, N) tensor, got {tuple(A.shape) if isinstance(A, Tensor) else type(A).__name__}")
    dstate = A.shape[1]
    if dstate < 1 or dstate > MAX_STATE_DIM:
        _fail("A", f"state size N = A.shape[1] must be in [1, {MAX_STATE_DIM}], got {dstate}")
    _check_tensor("A", A, (dim, dstate), device)
    bc = {}
    for name, t in (("B", B), ("C", C)):
        if not isinstance(t, Tensor) or t.dim() not in (3, 4):
            _fail(name, "expected (batch, N, L) or (batch, G, N, L)")
        t4 = t.unsqueeze(1) if t.dim() == 3 else t
        groups = t4.shape[1]
        if groups < 1 or dim % groups != 0:
            _fail(name, f"number of groups G = {groups} must divide D = {dim}")
        _check_tensor(name, t4, (batch, groups, dstate, length), device)
        _check_same_dtype(name, t4, u.dtype)
        if name == "C" and groups != bc["B"].shape[1]:
            _fail("C", f"expected the number of groups of B ({bc['B'].shape[1]}), got {groups}")
        bc[name] = t4.contiguous()
    cdt = compute_dtype(u.dtype)
    given = {
        "D": D is not None,
        "delta_bias": delta_bias is not None,
        "halt_weight": halt_weight is not None,
        "halt_bias": halt_bias is not None,
        "initial_state": initial_state is not None,
    }
    if D is not None:
        _check_tensor("D", D, (dim,), device)
    if delta_bias is not None:
        _check_tensor("delta_bias", delta_bias, (dim,), device)
    if halt_weight is not None:
        _check_tensor("halt_weight", halt_weight, (dim, dstate), device)
    if isinstance(halt_bias, (int, float)):
        halt_bias = torch.tensor(float(halt_bias), device=device)
    if halt_bias is not None:
        if not isinstance(halt_bias, Tensor) or halt_bias.numel() != 1:
            _fail("halt_bias", "expected a scalar tensor or a float")
        _check_tensor("halt_bias", halt_bias, tuple(halt_bias.shape), device)
        halt_bias = halt_bias.reshape(())
    if initial_state is not None:
        _check_tensor("initial_state", initial_state, (batch, dim, dstate), device)
    if not isinstance(delta_softplus, bool):
        _fail("delta_softplus", f"expected a bool, got {type(delta_softplus).__name__}")
    # Value checks read tensor data, which a compiled graph cannot do without breaking: they run in eager mode.
    if not torch.compiler.is_compiling():
        for name, t in (("A", A), ("D", D), ("delta_bias", delta_bias), ("halt_weight", halt_weight), ("halt_bias", halt_bias)):
            _check_finite(name, t)
        if check_finite:
            for name, t in (("u", u), ("delta", delta), ("z", z), ("B", B), ("C", C), ("initial_state", initial_state)):
                _check_finite(name, t)

    def param(t: Tensor | None, shape: tuple[int, ...]) -> Tensor:
        if t is None:
            return torch.zeros(shape, dtype=cdt, device=device)
        return t.to(cdt).contiguous()

    return ScanArgs(
        u=u.contiguous(),
        delta=delta.contiguous(),
        A=A.to(cdt).contiguous(),
        B=bc["B"],
        C=bc["C"],
        D=param(D, (dim,)),
        z=None if z is None else z.contiguous(),
        delta_bias=param(delta_bias, (dim,)),
        halt_weight=param(halt_weight, (dim, dstate)),
        halt_bias=param(halt_bias, ()),
        initial_state=param(initial_state, (batch, dim, dstate)),
        delta_softplus=delta_softplus,
        given=given,
    )


@dataclass
class StateUpdateArgs:
    """Validated inputs of one decode step: B, C as (batch, G, N); parameters materialised in the state's dtype."""

    x: Tensor
    dt: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    D: Tensor
    z: Tensor | None
    dt_bias: Tensor
    halt_weight: Tensor
    halt_bias: Tensor


def check_state_update_inputs(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    dt_bias: Tensor | None,
    dt_softplus: bool,
    halt_weight: Tensor | None,
    halt_bias: Tensor | float | None,
) -> StateUpdateArgs:
    """Validate one decode step's inputs (the state is updated in place, so it must already be right)."""
    if not isinstance(x, Tensor) or x.dim() != 2:
        _fail("x", "expected a (batch, D) tensor")
    batch, dim = x.shape
    device = x.device
    _check_tensor("x", x, (batch, dim), device)
    cdt = compute_dtype(x.dtype)
    if not isinstance(A, Tensor) or A.dim() != 2:
        _fail("A", "expected a (D, N) tensor")
    dstate = A.shape[1]
    if dstate < 1 or dstate > MAX_STATE_DIM:
        _fail("A", f"state size N = A.shape[1] must be in [1, {MAX_STATE_DIM}], got {dstate}")
    _check_tensor("A", A, (dim, dstate), device)
    _check_tensor("state", state, (batch, dim, dstate), device)
    if state.dtype != cdt:
        _fail("state", f"expected dtype {cdt} (the state is kept in the compute dtype), got {state.dtype}")
    if not state.is_contiguous():
        _fail("state", "must be contiguous (it is updated in place)")
    _check_tensor("dt", dt, (batch, dim), device)
    _check_same_dtype("dt", dt, x.dtype)
    if z is not None:
        _check_tensor("z", z, (batch, dim), device)
        _check_same_dtype("z", z, x.dtype)
    bc = {}
    for name, t in (("B", B), ("C", C)):
        if not isinstance(t, Tensor) or t.dim() not in (2, 3):
            _fail(name, "expected (batch, N) or (batch, G, N)")
        t3 = t.unsqueeze(1) if t.dim() == 2 else t
        if dim % t3.shape[1] != 0:
            _fail(name, f"number of groups G = {t3.shape[1]} must divide D = {dim}")
        _check_tensor(name, t3, (batch, t3.shape[1], dstate), device)
        _check_same_dtype(name, t3, x.dtype)
        if name == "C" and t3.shape[1] != bc["B"].shape[1]:
            _fail("C", f"expected the number of groups of B ({bc['B'].shape[1]}), got {t3.shape[1]}")
        bc[name] = t3.contiguous()
    if D is not None:
        _check_tensor("D", D, (dim,), device)
    if dt_bias is not None:
        _check_tensor("dt_bias", dt_bias, (dim,), device)
    if halt_weight is not None:
        _check_tensor("halt_weight", halt_weight, (dim, dstate), device)
    if isinstance(halt_bias, (int, float)):
        halt_bias = torch.tensor(float(halt_bias), device=device)
    if halt_bias is not None:
        if not isinstance(halt_bias, Tensor) or halt_bias.numel() != 1:
            _fail("halt_bias", "expected a scalar tensor or a float")
        _check_tensor("halt_bias", halt_bias, tuple(halt_bias.shape), device)
    if not isinstance(dt_softplus, bool):
        _fail("dt_softplus", f"expected a bool, got {type(dt_softplus).__name__}")

    def param(t: Tensor | None, shape: tuple[int, ...]) -> Tensor:
        return torch.zeros(shape, dtype=cdt, device=device) if t is None else t.to(cdt).reshape(shape).contiguous()

    return StateUpdateArgs(
        x=x.contiguous(),
        dt=dt.contiguous(),
        A=A.to(cdt).contiguous(),
        B=bc["B"],
        C=bc["C"],
        D=param(D, (dim,)),
        z=None if z is None else z.contiguous(),
        dt_bias=param(dt_bias, (dim,)),
        halt_weight=param(halt_weight, (dim, dstate)),
        halt_bias=param(halt_bias, ()),
    )
