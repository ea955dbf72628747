"""Input checks for the public ops: every problem is a ValueError that names the argument and what was wrong.

This is the one home of the limits every backend shares (MAX_STATE_DIM, FLOAT_DTYPES, the chunk size check);
the checks build the canonical contract.ScanArgs / contract.StateUpdateArgs that backends receive.

Value checks (NaN/Inf) read tensor data, i.e. a device -> host synchronisation on a GPU. They run only with
check_finite=True, in eager mode and on devices that hold data (not "meta"); with check_finite=False a call
validates shapes, dtypes and devices only and never synchronises.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .contract import ScanArgs, StateUpdateArgs, compute_dtype

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


def _reads_values(device: torch.device, check_finite: bool) -> bool:
    """Whether the NaN/Inf checks run: asked for, in eager mode (a compiled graph cannot read data without
    breaking) and on a device with data (meta tensors have none)."""
    return check_finite and device.type != "meta" and not torch.compiler.is_compiling()


def _check_finite(named: tuple[tuple[str, Tensor | None], ...]) -> None:
    for name, t in named:
        if t is not None and not bool(torch.isfinite(t).all()):
            _fail(name, "contains NaN or Inf")


def _check_same_dtype(name: str, t: Tensor, dtype: torch.dtype) -> None:
    if t.dtype != dtype:
        _fail(name, f"expected dtype {dtype} (the dtype of u), got {t.dtype}")


def check_flag(name: str, value: object) -> bool:
    """A boolean flag: True/False or the integers 1/0 (as mamba-ssm's callers pass them); anything else, a
    string included, is a ValueError naming the flag."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    _fail(name, f"expected a bool (True/False or 1/0), got {value!r}")


def check_chunk_size(chunk_size: object) -> int:
    """The number of steps per chunk, a positive int."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        _fail("chunk_size", f"expected a positive int, got {chunk_size!r}")
    return chunk_size


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
    for both; return them grouped and contiguous.

    For the scan (tail = (L,)) each may also be constant, (D, N), as mamba-ssm accepts it (h_t = exp(dt A) h +
    dt B[d, :] u, y = sum_n C[d, n] h): it becomes G = D groups, B expanded over batch and time, so a constant
    B or C costs a (batch, D, N, L) input (and the other one is repeated to D groups)."""
    batch = x.shape[0]
    grouped = {}
    constant = set()
    for name, t in (("B", B), ("C", C)):
        if tail and isinstance(t, Tensor) and t.dim() == 2:
            _check_tensor(name, t, (dim, dstate), x.device)
            constant.add(name)
            t = t[None, :, :, None].expand(batch, dim, dstate, *tail)
        elif not isinstance(t, Tensor) or t.dim() not in (2 + len(tail), 3 + len(tail)):
            layout = ", ".join(("batch", "N") + ("L",) * len(tail))
            alternatives = f"({layout}) or ({layout.replace('N', 'G, N')})" + (" or constant (D, N)" if tail else "")
            _fail(name, f"expected {alternatives}")
        t = t.unsqueeze(1) if t.dim() == 2 + len(tail) else t
        groups = t.shape[1]
        if groups < 1 or dim % groups != 0:
            _fail(name, f"number of groups G = {groups} must divide D = {dim}")
        _check_tensor(name, t, (batch, groups, dstate, *tail), x.device)
        _check_same_dtype(name, t, x.dtype)
        grouped[name] = t
    if constant:  # a constant one has D groups; give the other as many
        for name in ("B", "C"):
            grouped[name] = grouped[name].repeat_interleave(dim // grouped[name].shape[1], dim=1)
    elif grouped["C"].shape[1] != grouped["B"].shape[1]:
        _fail("C", f"expected the number of groups of B ({grouped['B'].shape[1]}), got {grouped['C'].shape[1]}")
    return grouped["B"].contiguous(), grouped["C"].contiguous()


def _check_params(
    device: torch.device, cdt: torch.dtype, dim: int, dstate: int, D: object, bias_name: str, bias: object,
    halt_weight: object, halt_bias: object,
) -> Tensor | None:
    """Check Dskip (D,), the delta/dt bias (D,), halt_weight (D, N) and halt_bias (a scalar tensor or a Python
    number); return halt_bias as a 0-d tensor (a Python number becomes one in the compute dtype, so a float64
    call keeps its precision, made on the device without a host -> device copy), or None."""
    for name, t, shape in (("D", D, (dim,)), (bias_name, bias, (dim,)), ("halt_weight", halt_weight, (dim, dstate))):
        if t is not None:
            _check_tensor(name, t, shape, device)
    if isinstance(halt_bias, (int, float)) and not isinstance(halt_bias, bool):
        halt_bias = torch.full((), float(halt_bias), dtype=cdt, device=device)
    if halt_bias is not None:
        if not isinstance(halt_bias, Tensor) or halt_bias.numel() != 1:
            _fail("halt_bias", "expected a scalar tensor or a float")
        _check_tensor("halt_bias", halt_bias, tuple(halt_bias.shape), device)
        halt_bias = halt_bias.reshape(())
    return halt_bias


def _or_zeros(t: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """t in `dtype`, contiguous, or zeros of `shape` (the neutral value of an optional input) if t is None."""
    return torch.zeros(shape, dtype=dtype, device=device) if t is None else t.to(dtype).contiguous()


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
    *,
    chunk_size: int = 64,
    with_channel_mean: bool = False,
) -> ScanArgs:
    """Validate the fused scan's inputs and put them in the canonical form backends expect (contract.ScanArgs).

    B and C become (batch, G, N, L); the parameters are contiguous in the compute dtype; the optional ones that
    have a neutral value (Dskip, delta_bias, halt_weight, halt_bias, initial_state) are materialised as zeros so
    that backends see one form (the zeros do not require grad, so autograd drops their gradients). chunk_size is
    the backend's (ops.selective_scan passes it); with_channel_mean asks for s_t = mean_d h_t[d, :].
    check_finite: reject NaN/Inf in every tensor (a device sync); False checks no values at all.
    """
    if not isinstance(u, Tensor) or u.dim() != 3:
        _fail("u", f"expected a (batch, D, L) tensor, got {tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__}")
    batch, dim, length = u.shape
    if batch == 0 or dim == 0 or length == 0:
        _fail("u", f"every dimension must be non-zero, got shape {tuple(u.shape)}")
    device = u.device
    cdt = compute_dtype(u.dtype)
    _check_tensor("u", u, (batch, dim, length), device)
    for name, t in (("delta", delta), ("z", z)):
        if t is not None or name == "delta":
            _check_tensor(name, t, (batch, dim, length), device)
            _check_same_dtype(name, t, u.dtype)
    dstate = _check_state_size(A, dim, device)
    B, C = _check_bc(B, C, u, dim, dstate, (length,))
    halt_bias = _check_params(device, cdt, dim, dstate, D, "delta_bias", delta_bias, halt_weight, halt_bias)
    if initial_state is not None:
        _check_tensor("initial_state", initial_state, (batch, dim, dstate), device)
    delta_softplus = check_flag("delta_softplus", delta_softplus)
    with_channel_mean = check_flag("with_channel_mean", with_channel_mean)
    if _reads_values(device, check_flag("check_finite", check_finite)):
        _check_finite((("A", A), ("D", D), ("delta_bias", delta_bias), ("halt_weight", halt_weight),
                       ("halt_bias", halt_bias), ("u", u), ("delta", delta), ("z", z), ("B", B), ("C", C),
                       ("initial_state", initial_state)))
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
        with_channel_mean=with_channel_mean,
        chunk_size=check_chunk_size(chunk_size),
    )


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
    check_finite: bool = True,
) -> StateUpdateArgs:
    """Validate one decode step's inputs (contract.StateUpdateArgs). The state is updated in place, so it must
    already be right: (batch, D, N), contiguous, in the compute dtype, and not require grad (an in-place update
    of a tensor autograd tracks would be silently wrong). check_finite: reject NaN/Inf in every tensor, the
    state included (a device sync); False checks no values."""
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
    if state.requires_grad:
        _fail("state", "requires grad, but the decode step updates it in place without autograd (pass a detached "
                       "state, e.g. state.detach())")
    for name, t in (("dt", dt), ("z", z)):
        if t is not None or name == "dt":
            _check_tensor(name, t, (batch, dim), device)
            _check_same_dtype(name, t, x.dtype)
    B, C = _check_bc(B, C, x, dim, dstate, ())
    halt_bias = _check_params(device, cdt, dim, dstate, D, "dt_bias", dt_bias, halt_weight, halt_bias)
    dt_softplus = check_flag("dt_softplus", dt_softplus)
    if _reads_values(device, check_flag("check_finite", check_finite)):
        _check_finite((("A", A), ("D", D), ("dt_bias", dt_bias), ("halt_weight", halt_weight),
                       ("halt_bias", halt_bias), ("state", state), ("x", x), ("dt", dt), ("z", z), ("B", B),
                       ("C", C)))
    return StateUpdateArgs(
        state=state,
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
        dt_softplus=dt_softplus,
    )
