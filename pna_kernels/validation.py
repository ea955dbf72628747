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


def _check_state_size(A: object, dim: int, device: torch.device) -> int:
    """Check A (D, N) and return N."""
    if not isinstance(A, Tensor) or A.dim() != 2:
        _fail("A", f"expected a (D, N) tensor, got {tuple(A.shape) if isinstance(A, Tensor) else type(A).__name__}")
    dstate = A.shape[1]
    if dstate < 1 or dstate > MAX_STATE_DIM:
        _fail("A", f"state size N = A.shape[1] must be in [1, {MAX_STATE_DIM}], got {dstate}")
    _check_tensor("A", A, (dim, dstate), device)
    return dstate


def _check_bc(B: object, C: object, x: Tensor, dim: int, dstate: int, tail: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Check B and C, ungrouped (batch, N, *tail) or grouped (batch, G, N, *tail) with G dividing D and the same G
    for both; return them grouped and contiguous."""
    batch = x.shape[0]
    grouped = {}
    for name, t in (("B", B), ("C", C)):
        if not isinstance(t, Tensor) or t.dim() not in (2 + len(tail), 3 + len(tail)):
            layout = ", ".join(("batch", "N") + ("L",) * len(tail))
            _fail(name, f"expected ({layout}) or ({layout.replace('N', 'G, N')})")
        t = t.unsqueeze(1) if t.dim() == 2 + len(tail) else t
        groups = t.shape[1]
        if groups < 1 or dim % groups != 0:
            _fail(name, f"number of groups G = {groups} must divide D = {dim}")
        _check_tensor(name, t, (batch, groups, dstate, *tail), x.device)
        _check_same_dtype(name, t, x.dtype)
        if name == "C" and groups != grouped["B"].shape[1]:
            _fail("C", f"expected the number of groups of B ({grouped['B'].shape[1]}), got {groups}")
        grouped[name] = t.contiguous()
    return grouped["B"], grouped["C"]


def _check_params(
    device: torch.device, dim: int, dstate: int, D: object, bias_name: str, bias: object, halt_weight: object,
    halt_bias: object,
) -> Tensor | None:
    """Check Dskip (D,), the delta/dt bias (D,), halt_weight (D, N) and halt_bias (a scalar tensor or a float);
    return halt_bias as a 0-d tensor (or None)."""
    for name, t, shape in (("D", D, (dim,)), (bias_name, bias, (dim,)), ("halt_weight", halt_weight, (dim, dstate))):
        if t is not None:
            _check_tensor(name, t, shape, device)
    if isinstance(halt_bias, (int, float)):
        halt_bias = torch.tensor(float(halt_bias), device=device)
    if halt_bias is not None:
        if not isinstance(halt_bias, Tensor) or halt_bias.numel() != 1:
            _fail("halt_bias", "expected a scalar tensor or a float")
        _check_tensor("halt_bias", halt_bias, tuple(halt_bias.shape), device)
        halt_bias = halt_bias.reshape(())
    return halt_bias


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        _fail(name, f"expected a bool, got {type(value).__name__}")


def _or_zeros(t: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """t in `dtype`, contiguous, or zeros of `shape` (the neutral value of an optional input) if t is None."""
    return torch.zeros(shape, dtype=dtype, device=device) if t is None else t.to(dtype).contiguous()


@dataclass
class ScanArgs:
    """Validated, normalised inputs of the fused scan.

    B and C are always (batch, G, N, L); parameters are contiguous in the compute dtype; the optional ones
    that have a neutral value (Dskip, delta_bias, halt_weight, halt_bias, initial_state) are materialised as
    zeros so that kernels see one signature (the zeros do not require grad, so autograd drops their gradients).
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
    for name, t in (("delta", delta), ("z", z)):
        if t is not None or name == "delta":
            _check_tensor(name, t, (batch, dim, length), device)
            _check_same_dtype(name, t, u.dtype)
    dstate = _check_state_size(A, dim, device)
    B, C = _check_bc(B, C, u, dim, dstate, (length,))
    halt_bias = _check_params(device, dim, dstate, D, "delta_bias", delta_bias, halt_weight, halt_bias)
    if initial_state is not None:
        _check_tensor("initial_state", initial_state, (batch, dim, dstate), device)
    _check_bool("delta_softplus", delta_softplus)
    # Value checks read tensor data, which a compiled graph cannot do without breaking: they run in eager mode.
    if not torch.compiler.is_compiling():
        for name, t in (("A", A), ("D", D), ("delta_bias", delta_bias), ("halt_weight", halt_weight), ("halt_bias", halt_bias)):
            _check_finite(name, t)
        if check_finite:
            for name, t in (("u", u), ("delta", delta), ("z", z), ("B", B), ("C", C), ("initial_state", initial_state)):
                _check_finite(name, t)
    cdt = compute_dtype(u.dtype)
    return ScanArgs(
        u=u.contiguous(),
        delta=delta.contiguous(),
        A=A.to(cdt).contiguous(),
        B=B,
        C=C,
        D=_or_zeros(D, (dim,), cdt, device),
        z=None if z is None else z.contiguous(),
        delta_bias=_or_zeros(delta_bias, (dim,), cdt, device),
        halt_weight=_or_zeros(halt_weight, (dim, dstate), cdt, device),
        halt_bias=_or_zeros(halt_bias, (), cdt, device),
        initial_state=_or_zeros(initial_state, (batch, dim, dstate), cdt, device),
        delta_softplus=delta_softplus,
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
    dstate = _check_state_size(A, dim, device)
    _check_tensor("state", state, (batch, dim, dstate), device)
    if state.dtype != cdt:
        _fail("state", f"expected dtype {cdt} (the state is kept in the compute dtype), got {state.dtype}")
    if not state.is_contiguous():
        _fail("state", "must be contiguous (it is updated in place)")
    for name, t in (("dt", dt), ("z", z)):
        if t is not None or name == "dt":
            _check_tensor(name, t, (batch, dim), device)
            _check_same_dtype(name, t, x.dtype)
    B, C = _check_bc(B, C, x, dim, dstate, ())
    halt_bias = _check_params(device, dim, dstate, D, "dt_bias", dt_bias, halt_weight, halt_bias)
    _check_bool("dt_softplus", dt_softplus)
    return StateUpdateArgs(
        x=x.contiguous(),
        dt=dt.contiguous(),
        A=A.to(cdt).contiguous(),
        B=B,
        C=C,
        D=_or_zeros(D, (dim,), cdt, device),
        z=None if z is None else z.contiguous(),
        dt_bias=_or_zeros(dt_bias, (dim,), cdt, device),
        halt_weight=_or_zeros(halt_weight, (dim, dstate), cdt, device),
        halt_bias=_or_zeros(halt_bias, (), cdt, device),
    )
