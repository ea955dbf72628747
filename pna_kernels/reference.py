"""The semantic oracle: a plain PyTorch selective scan with state entropy and halt logits.

Every fast path (the vectorised PyTorch scan, Triton, CUDA, C++/OpenMP) is checked against the functions here,
forward and backward. They loop over time in Python, materialise every state and let autograd differentiate
them, so they are slow but obviously right, and they run in float64 on any device.

Shapes (mamba-ssm's selective_scan_fn layout):
    u, delta, z: (batch, D, L);  A: (D, N);  B, C: (batch, G, N, L) with D % G == 0 (G = 1 for ungrouped);
    Dskip, delta_bias: (D,);  halt_weight: (D, N);  halt_bias: ();  initial_state: (batch, D, N).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .contract import (
    COTANGENT_OF, ScanArgs, ScanCotangents, ScanGrads, ScanResult, ScanSaved, StateUpdateArgs, StateUpdateResult,
    compute_dtype, fields_of, tensor_fields,
)


def expand_groups(BC: Tensor, D: int) -> Tensor:
    """(batch, G, N, L) -> (batch, D, N, L): channel d reads group d // (D // G)."""
    return BC.repeat_interleave(D // BC.shape[1], dim=1)


def discretize_dt(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    """dt = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias, in delta's dtype."""
    if delta_bias is not None:
        delta = delta + delta_bias[..., :, None] if delta.dim() == 3 else delta + delta_bias
    return F.softplus(delta) if delta_softplus else delta


def entropy_sums(h: Tensor) -> tuple[Tensor, Tensor]:
    """S1 = sum h^2 and S2 = sum h^2 log h^2 (0 log 0 = 0) over the last two dims (D, N) of h."""
    e = h * h
    s2_terms = e * torch.log(torch.where(e > 0, e, torch.ones_like(e)))  # log 1 = 0 where e = 0: value and grad 0
    return e.sum(dim=(-2, -1)), s2_terms.sum(dim=(-2, -1))


def entropy_from_sums(s1: Tensor, s2: Tensor) -> Tensor:
    """H = log(S1) - S2 / S1, and 0 where S1 == 0. A non-finite state (S1 NaN or Inf) gives NaN, never 0."""
    zero = s1 == 0
    s1_safe = torch.where(zero, torch.ones_like(s1), s1)
    entropy = torch.where(zero, torch.zeros_like(s1), torch.log(s1_safe) - s2 / s1_safe)
    return torch.where(torch.isinf(s1), torch.full_like(s1, float("nan")), entropy)


def state_entropy(h: Tensor) -> Tensor:
    """Energy entropy of a state h (..., D, N): p = h^2 / sum h^2 over all D*N entries, H = -sum p log p."""
    return entropy_from_sums(*entropy_sums(h))


def normalized_entropy(entropy: Tensor, num_states: int) -> Tensor:
    """Entropy divided by its maximum log(D*N), so 1 means energy spread evenly over the whole state."""
    if num_states < 2:
        raise ValueError(f"num_states must be >= 2 to normalise entropy, got {num_states}")
    return entropy / torch.log(torch.tensor(float(num_states), dtype=entropy.dtype, device=entropy.device))


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    halt_weight: Tensor | None = None,
    halt_bias: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Reference selective scan, one time step at a time.

    B and C may be (batch, N, L) or (batch, G, N, L). Returns
    out (batch, D, L) in u's dtype, entropy (batch, L), halt_logits (batch, L), last_state (batch, D, N)
    and states (batch, L, D, N), all but `out` in the compute dtype (float32, or float64 for float64 input).
    """
    dtype_in = u.dtype
    cdt = compute_dtype(dtype_in)
    batch, dim, length = u.shape
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    u_c, A_c = u.to(cdt), A.to(cdt)
    dt = discretize_dt(delta.to(cdt), None if delta_bias is None else delta_bias.to(cdt), delta_softplus)
    Bx, Cx = expand_groups(B.to(cdt), dim), expand_groups(C.to(cdt), dim)
    h = (
        initial_state.to(cdt)
        if initial_state is not None
        else torch.zeros(batch, dim, A.shape[1], dtype=cdt, device=u.device)
    )
    ys, states = [], []
    for t in range(length):
        dt_t = dt[:, :, t, None]
        h = torch.exp(dt_t * A_c) * h + dt_t * Bx[:, :, :, t] * u_c[:, :, t, None]
        ys.append((h * Cx[:, :, :, t]).sum(-1))
        states.append(h)
    y = torch.stack(ys, dim=-1)
    hs = torch.stack(states, dim=1)
    if D is not None:
        y = y + D.to(cdt)[:, None] * u_c
    if z is not None:
        y = y * F.silu(z.to(cdt))
    entropy = state_entropy(hs)
    halt = torch.zeros(batch, length, dtype=cdt, device=u.device)
    if halt_weight is not None:
        halt = (hs * halt_weight.to(cdt)).sum(dim=(-2, -1))
    if halt_bias is not None:
        halt = halt + halt_bias.to(cdt)
    return y.to(dtype_in), entropy, halt, h, hs


def selective_state_update_ref(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    halt_weight: Tensor | None = None,
    halt_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One decode step. state (batch, D, N) is updated in place.

    x, dt, z: (batch, D); B, C: (batch, N) or (batch, G, N). Returns y (batch, D) in x's dtype,
    entropy (batch,) and halt_logits (batch,) in the state's compute dtype.
    """
    cdt = compute_dtype(x.dtype)
    dim = x.shape[1]
    if B.dim() == 2:
        B = B.unsqueeze(1)
    if C.dim() == 2:
        C = C.unsqueeze(1)
    Bx = B.to(cdt).repeat_interleave(dim // B.shape[1], dim=1)
    Cx = C.to(cdt).repeat_interleave(dim // C.shape[1], dim=1)
    dt_c = discretize_dt(dt.to(cdt), None if dt_bias is None else dt_bias.to(cdt), dt_softplus)[..., None]
    h = torch.exp(dt_c * A.to(cdt)) * state.to(cdt) + dt_c * Bx * x.to(cdt)[..., None]
    state.copy_(h.to(state.dtype))
    y = (h * Cx).sum(-1)
    if D is not None:
        y = y + D.to(cdt) * x.to(cdt)
    if z is not None:
        y = y * F.silu(z.to(cdt))
    halt = torch.zeros(x.shape[0], dtype=cdt, device=x.device)
    if halt_weight is not None:
        halt = (h * halt_weight.to(cdt)).sum(dim=(-2, -1))
    if halt_bias is not None:
        halt = halt + halt_bias.to(cdt)
    return y.to(x.dtype), state_entropy(h), halt


# ---------------------------------------------------------------------------------------------------------------
# The "reference" backend: the oracle behind the common backend interface (see pna_kernels/backends.py).

CHUNK_SIZE = 64


def supports(device: torch.device, dtype: torch.dtype, dstate: int) -> str | None:
    """The reference runs on any device and dtype."""
    return None


def checkpoints_from_states(initial_state: Tensor, states: Tensor, chunk_size: int) -> Tensor:
    """(batch, n_chunks, D, N): the state before each chunk of `chunk_size` steps (chunk 0: initial_state)."""
    before = states[:, chunk_size - 1 : -1 : chunk_size]
    return torch.cat([initial_state.to(states.dtype)[:, None], before], dim=1)


ORACLE_FLAGS = ("with_channel_mean", "chunk_size")  # ScanArgs fields the oracle functions do not take


def oracle_kwargs(args: ScanArgs) -> dict:
    """ScanArgs as keyword arguments of selective_scan_ref / parallel.selective_scan_parallel."""
    return {n: getattr(args, n) for n in fields_of(ScanArgs) if n not in ORACLE_FLAGS}


def result_from_states(args: ScanArgs, out: Tensor, halt: Tensor, states: Tensor, s1: Tensor, s2: Tensor
                       ) -> ScanResult:
    """The backend forward's ScanResult from the scan's output, halt logits, S1, S2 and every state
    (batch, L, D, N): channel mean, checkpoints and entropy sums derived from the states."""
    return ScanResult(
        out=out,
        entropy=entropy_from_sums(s1, s2),
        halt_logits=halt,
        last_state=states[:, -1].contiguous(),
        channel_mean=states.mean(dim=2) if args.with_channel_mean else states.new_empty(0),
        checkpoints=checkpoints_from_states(args.initial_state, states, args.chunk_size),
        entropy_sums=torch.stack([s1, s2], 1),
    )


def scan_forward(args: ScanArgs) -> ScanResult:
    """Backend forward (pna_kernels.contract)."""
    out, _, halt, _, states = selective_scan_ref(**oracle_kwargs(args))
    return result_from_states(args, out, halt, states, *entropy_sums(states))


def autograd_inside_custom_op() -> torch._C._ForceDispatchKeyGuard:
    """A custom op's kernel runs below the autograd dispatch keys; this lets autograd record inside it again."""
    keys = torch._C.DispatchKey
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (keys.AutogradFunctionality, keys.AutogradOther, keys.AutogradNestedTensor):
        exclude = exclude - torch._C.DispatchKeySet(key)
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude)


def backward_by_recompute(scan_fn: Callable[..., tuple], args: ScanArgs, cot: ScanCotangents) -> ScanGrads:
    """Gradients of a differentiable scan_fn(**oracle_kwargs(args)) -> (out, entropy, halt_logits, last_state,
    states) by running it again under autograd; the channel mean (states averaged over D) joins the outputs when
    args.with_channel_mean."""
    names = tensor_fields(ScanArgs)
    leaves = {n: (None if getattr(args, n) is None else getattr(args, n).detach().requires_grad_(True))
              for n in names}
    with autograd_inside_custom_op(), torch.enable_grad():
        out, entropy, halt, last, states = scan_fn(**{**oracle_kwargs(args), **leaves})
        outputs = {"out": out, "entropy": entropy, "halt_logits": halt, "last_state": last}
        if args.with_channel_mean:
            outputs["channel_mean"] = states.mean(dim=2)
        wrt = [t for t in leaves.values() if t is not None]
        got = torch.autograd.grad(tuple(outputs.values()), wrt,
                                  tuple(getattr(cot, COTANGENT_OF[n]) for n in outputs), allow_unused=True)
    got_iter = iter(got)
    grads = {}
    for n, leaf in leaves.items():
        g = None if leaf is None else next(got_iter)
        grads[n] = None if leaf is None else (torch.zeros_like(leaf) if g is None else g.contiguous())
    return ScanGrads(**grads)


def scan_backward(args: ScanArgs, saved: ScanSaved, cot: ScanCotangents) -> ScanGrads:
    """Backend backward (pna_kernels.contract): recompute the oracle under autograd."""
    return backward_by_recompute(selective_scan_ref, args, cot)


def state_update(args: StateUpdateArgs) -> StateUpdateResult:
    """Backend decode step (pna_kernels.contract); updates args.state in place."""
    y, entropy, halt = selective_state_update_ref(
        args.state, args.x, args.dt, args.A, args.B, args.C, args.D, args.z, args.dt_bias, args.dt_softplus,
        args.halt_weight, args.halt_bias,
    )
    return StateUpdateResult(y=y, entropy=entropy, halt_logits=halt, channel_mean=args.state.mean(dim=1))
