"""The backend contract by name: what every backend's scan_forward / scan_backward / state_update take and return.

A backend is a module (see backends.py) with

    CHUNK_SIZE: int
    supports(device, dtype, dstate) -> str | None      None if it runs these inputs, else a sentence saying why not
    scan_forward(args: ScanArgs) -> ScanResult
    scan_backward(args: ScanArgs, saved: ScanSaved, cot: ScanCotangents) -> ScanGrads
    state_update(args: StateUpdateArgs) -> StateUpdateResult     (updates args.state in place)

Inputs arrive validated and in canonical form (validation.py): contiguous; B and C (batch, G, N, L) (decode:
(batch, G, N)); the parameters A, D, delta_bias, halt_weight, halt_bias, initial_state in the compute dtype
(float32, or float64 for float64 inputs) with every optional one but z materialised (zeros).

Shapes, with batch, D (channels), L (length), N (state size), G (B/C groups), K = ceil(L / chunk_size):
    out (batch, D, L) in u's dtype; entropy, halt_logits (batch, L); last_state (batch, D, N);
    channel_mean (batch, L, N) = mean over d of h_t[d, :] when args.with_channel_mean, else an empty (0,) tensor;
    checkpoints (batch, K, D, N) = the state before each chunk; entropy_sums (batch, 2, L) = S1, S2 of every step.
All outputs but `out` are in the compute dtype. A non-finite state gives NaN entropy (never a finite number).
Gradients come back in the dtype and shape of their input, contiguous; dz is None when z is None.
COTANGENT_OF maps each differentiable ScanResult field to its ScanCotangents field.

Only the torch.library boundary (ops.py) flattens these to positional tensors, in the order of the dataclass
fields (`fields_of`, `flatten`, `unflatten`, `op_schema`), so adding an input or output is one field here.
`scan_result_shapes`, `new_scan_result`, `new_scan_grads` and `new_state_update_result` give outputs of the
contract's shapes and dtypes (the fake kernels use them; a native backend may too). `compute_dtype` is the one
definition of the compute dtype; `replace` copies a contract object with fields changed (torch.compile traces
it, and `fields_of`/`tensor_fields` read the names kept on each class as FIELD_NAMES/TENSOR_FIELDS).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional, Sequence, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the recurrence runs in: float64 for float64 inputs, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class ScanArgs:
    """Validated, canonical inputs of the fused scan (see the module docstring for shapes)."""

    u: Tensor
    delta: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    D: Tensor
    z: Optional[Tensor]
    delta_bias: Tensor
    halt_weight: Tensor
    halt_bias: Tensor
    initial_state: Tensor
    delta_softplus: bool
    with_channel_mean: bool
    chunk_size: int


@dataclass(frozen=True)
class ScanResult:
    """Forward outputs: the four public ones, the optional channel mean, and what the backward needs."""

    out: Tensor
    entropy: Tensor
    halt_logits: Tensor
    last_state: Tensor
    channel_mean: Tensor
    checkpoints: Tensor
    entropy_sums: Tensor

    @property
    def saved(self) -> "ScanSaved":
        return ScanSaved(checkpoints=self.checkpoints, entropy_sums=self.entropy_sums)


@dataclass(frozen=True)
class ScanSaved:
    """What the forward leaves for the backward (besides the inputs): chunk-boundary states and S1/S2 per step."""

    checkpoints: Tensor
    entropy_sums: Tensor


@dataclass(frozen=True)
class ScanCotangents:
    """Incoming gradients, materialised (zeros where an output got none). grad_channel_mean is (batch, L, N) when
    args.with_channel_mean, else an empty (0,) tensor."""

    grad_out: Tensor
    grad_entropy: Tensor
    grad_halt: Tensor
    grad_last_state: Tensor
    grad_channel_mean: Tensor


@dataclass(frozen=True)
class ScanGrads:
    """Gradients of every tensor input of ScanArgs (dz None when z is None)."""

    u: Tensor
    delta: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    D: Tensor
    z: Optional[Tensor]
    delta_bias: Tensor
    halt_weight: Tensor
    halt_bias: Tensor
    initial_state: Tensor


@dataclass(frozen=True)
class StateUpdateArgs:
    """Validated inputs of one decode step: state (batch, D, N) in the compute dtype (updated in place),
    x, dt, z (batch, D); B, C (batch, G, N); parameters materialised in the compute dtype."""

    state: Tensor
    x: Tensor
    dt: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    D: Tensor
    z: Optional[Tensor]
    dt_bias: Tensor
    halt_weight: Tensor
    halt_bias: Tensor
    dt_softplus: bool


@dataclass(frozen=True)
class StateUpdateResult:
    """One decode step's outputs: y (batch, D) in x's dtype; entropy, halt_logits (batch,) and channel_mean
    (batch, N) = mean over d of the new state, in the compute dtype."""

    y: Tensor
    entropy: Tensor
    halt_logits: Tensor
    channel_mean: Tensor


CONTRACT_CLASSES = (ScanArgs, ScanResult, ScanSaved, ScanCotangents, ScanGrads, StateUpdateArgs, StateUpdateResult)
for _cls in CONTRACT_CLASSES:
    # Field names kept on the class as plain tuples: torch.compile traces reading them, not dataclasses.fields().
    _cls.FIELD_NAMES = tuple(f.name for f in fields(_cls))
    _cls.TENSOR_FIELDS = tuple(f.name for f in fields(_cls) if f.type not in ("bool", "int", bool, int))


def fields_of(cls: type) -> tuple[str, ...]:
    """The field names of a contract dataclass, in declaration order (the order of the flattened form)."""
    return cls.FIELD_NAMES


def tensor_fields(cls: type) -> tuple[str, ...]:
    """The names of the fields that hold tensors (everything but the bool/int flags)."""
    return cls.TENSOR_FIELDS


def replace(obj: T, **changes: Any) -> T:
    """A copy of a contract dataclass with some fields changed (dataclasses.replace, traceable by torch.compile)."""
    return type(obj)(**{n: changes.get(n, getattr(obj, n)) for n in fields_of(type(obj))})


def flatten(obj: Any, names: tuple[str, ...] | None = None) -> tuple:
    """The values of `obj`'s fields (or of `names`), in order."""
    return tuple(getattr(obj, n) for n in (names or fields_of(type(obj))))


def unflatten(cls: type[T], values, names: tuple[str, ...] | None = None, **extra: Any) -> T:
    """Rebuild a contract dataclass from values in field order (or the order of `names`), plus keyword fields."""
    names = names or fields_of(cls)
    values = tuple(values)
    if len(values) != len(names):
        raise TypeError(f"{cls.__name__}: expected {len(names)} values ({', '.join(names)}), got {len(values)}")
    return cls(**dict(zip(names, values)), **extra)


# Which cotangent belongs to which output of ScanResult (the backward gets one per differentiable output).
COTANGENT_OF: dict[str, str] = {
    "out": "grad_out",
    "entropy": "grad_entropy",
    "halt_logits": "grad_halt",
    "last_state": "grad_last_state",
    "channel_mean": "grad_channel_mean",
}

_SCHEMA_TYPES = {"Tensor": "Tensor", "Optional[Tensor]": "Tensor?", "bool": "bool", "int": "int", "str": "str"}


def op_schema(inputs: Sequence[type], returns: type, extra: Sequence[tuple[str, str]] = (),
              mutated: Sequence[str] = ()) -> str:
    """The torch.library schema of an op taking the fields of `inputs` (in order) and then `extra` (name, type)
    pairs, returning one Tensor per field of `returns`; `mutated` names inputs the op writes in place.

    A field typed Optional[Tensor] is `Tensor?`; every returned field is a Tensor (an absent one, like dz without
    z, travels as an empty (0,) tensor)."""
    params = []
    for cls in inputs:
        for f in fields(cls):
            kind = _SCHEMA_TYPES[f.type if isinstance(f.type, str) else f.type.__name__]
            params.append(f"{'Tensor(a!)' if f.name in mutated else kind} {f.name}")
    params += [f"{kind} {name}" for name, kind in extra]
    return f"({', '.join(params)}) -> ({', '.join('Tensor' for _ in fields(returns))})"


def scan_result_shapes(args: ScanArgs) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """(shape, dtype) of every ScanResult field for `args`, in field order."""
    batch, dim, length = args.u.shape
    dstate = args.A.shape[1]
    cdt = args.A.dtype  # parameters arrive in the compute dtype
    return {
        "out": ((batch, dim, length), args.u.dtype),
        "entropy": ((batch, length), cdt),
        "halt_logits": ((batch, length), cdt),
        "last_state": ((batch, dim, dstate), cdt),
        "channel_mean": ((batch, length, dstate) if args.with_channel_mean else (0,), cdt),
        "checkpoints": ((batch, -(-length // args.chunk_size), dim, dstate), cdt),
        "entropy_sums": ((batch, 2, length), cdt),
    }


def new_scan_result(args: ScanArgs) -> ScanResult:
    """An uninitialised ScanResult of the contract's shapes and dtypes for `args`, on args.u's device."""
    return ScanResult(**{n: args.u.new_empty(shape, dtype=dtype) for n, (shape, dtype) in scan_result_shapes(args).items()})


def new_scan_grads(args: ScanArgs) -> ScanGrads:
    """Uninitialised gradients, one like each tensor input of `args` (z None when args.z is None)."""
    return ScanGrads(**{n: None if getattr(args, n) is None else torch.empty_like(getattr(args, n))
                        for n in fields_of(ScanGrads)})


def new_state_update_result(args: StateUpdateArgs) -> StateUpdateResult:
    """An uninitialised StateUpdateResult of the contract's shapes and dtypes for `args`."""
    batch, dim, dstate = args.state.shape
    cdt = args.state.dtype
    return StateUpdateResult(
        y=torch.empty_like(args.x),
        entropy=args.x.new_empty(batch, dtype=cdt),
        halt_logits=args.x.new_empty(batch, dtype=cdt),
        channel_mean=args.x.new_empty(batch, dstate, dtype=cdt),
    )
