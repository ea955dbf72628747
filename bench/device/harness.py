"""Timing harness for the fused scan: what is timed (calls) and how (timers), one row per backend and pass.

Two paths are timed for every backend:

* "contract": the backend's scan_forward(ScanArgs) and scan_backward(ScanArgs, ScanSaved, ScanCotangents) on
  arguments validated once, outside the timed region (pna_kernels/contract.py), so only the kernels and their
  launches are timed: no validation, no device->host sync;
* "api": pna_kernels.selective_scan(..., check_finite=False) forward, and forward + autograd backward: what a
  model pays, validation and dispatch included.

A backend that is missing, cannot run the inputs, or is still on the old positional signature gives rows with a
recorded reason instead of stopping the run.
"""
from __future__ import annotations

import inspect
import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import torch
from torch import Tensor

from .floors import ELEMENT_BYTES, Floors, ScanFootprint, SfuRate, pass_floors
from .plan import Shape

PASSES = (("contract", "fwd"), ("contract", "bwd"), ("api", "fwd"), ("api", "fwd+bwd"))


@dataclass(frozen=True)
class Timing:
    """Per-call milliseconds over `reps` timed calls."""

    median_ms: float
    min_ms: float
    p20_ms: float
    p80_ms: float
    reps: int


def summarize(samples_ms: list[float]) -> Timing:
    ordered = sorted(samples_ms)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return Timing(statistics.median(ordered), ordered[0], pick(0.2), pick(0.8), len(ordered))


class CudaEventTimer:
    """CUDA events around each call, after warm-up, with the L2 cache flushed (a buffer of twice its size is
    zeroed) before every timed call, outside the events. Each call's events are read after one final sync, so
    nothing synchronises between calls. The rep count aims at about target_ms of timed work."""

    def __init__(self, warmup_ms: float = 100.0, target_ms: float = 300.0, min_reps: int = 5, max_reps: int = 100):
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        l2_bytes = getattr(props, "L2_cache_size", 0) or 64 * 2**20
        self.flush = torch.empty(max(2 * l2_bytes, 256 * 2**20) // 4, dtype=torch.int32, device="cuda")
        self.warmup_ms, self.target_ms, self.min_reps, self.max_reps = warmup_ms, target_ms, min_reps, max_reps

    def measure(self, fn: Callable[[], Any]) -> Timing:
        fn()  # compiles / loads whatever the first call needs
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(3):
            fn()
        end.record()
        end.synchronize()
        estimate_ms = max(start.elapsed_time(end) / 3, 1e-3)
        for _ in range(max(1, min(50, int(self.warmup_ms / estimate_ms)))):
            fn()
        reps = max(self.min_reps, min(self.max_reps, int(self.target_ms / estimate_ms)))
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for begin, finish in events:
            self.flush.zero_()
            begin.record()
            fn()
            finish.record()
        torch.cuda.synchronize()
        return summarize([begin.elapsed_time(finish) for begin, finish in events])


class WallClockTimer:
    """perf_counter around each call, for CPU tensors (the dry run): synchronous work, no cache flush."""

    def __init__(self, reps: int = 5):
        self.reps = reps

    def measure(self, fn: Callable[[], Any]) -> Timing:
        fn()
        samples = []
        for _ in range(self.reps):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
        return summarize(samples)


def footprint(shape: Shape) -> ScanFootprint:
    return ScanFootprint(batch=shape.batch, length=shape.length, dim=shape.dim, dstate=shape.dstate,
                         act_bytes=ELEMENT_BYTES[shape.dtype], groups=shape.groups)


def make_inputs(shape: Shape, device: str, seed: int = 0) -> dict[str, Tensor | None]:
    """Random inputs of a shape in mamba-1's layout (ungrouped B, C), with z, a halt head and an initial state."""
    from pna_kernels.testing import random_scan_inputs

    return random_scan_inputs(shape.batch, shape.dim, shape.length, shape.dstate, groups=shape.groups,
                              dtype=getattr(torch, shape.dtype), device=device, seed=seed,
                              grouped_bc=shape.groups != 1)


def contract_reason(module: Any) -> str | None:
    """Why a backend module cannot be called through the contract (None if it can): it must take
    scan_forward(args) and scan_backward(args, saved, cot)."""
    for fn_name, want in (("scan_forward", 1), ("scan_backward", 3)):
        fn = getattr(module, fn_name, None)
        if fn is None:
            return f"{module.__name__} has no {fn_name}"
        got = len(inspect.signature(fn).parameters)
        if got != want:
            return (f"{module.__name__}.{fn_name} takes {got} parameters, not the contract's {want} "
                    f"(still on the old positional signature?)")
    return None


def prevalidated_args(x: dict[str, Tensor | None], chunk_size: int, with_channel_mean: bool = False):
    """The contract's ScanArgs for inputs x, validated once (no NaN scan of the activations), for timing."""
    from pna_kernels.contract import ScanArgs, fields_of
    from pna_kernels.validation import check_scan_inputs

    checked = check_scan_inputs(
        u=x["u"], delta=x["delta"], A=x["A"], B=x["B"], C=x["C"], D=x["D"], z=x["z"], delta_bias=x["delta_bias"],
        delta_softplus=True, halt_weight=x["halt_weight"], halt_bias=x["halt_bias"],
        initial_state=x["initial_state"], check_finite=False,
    )
    if isinstance(checked, ScanArgs):
        return replace(checked, with_channel_mean=with_channel_mean, chunk_size=chunk_size)
    values = {name: getattr(checked, name) for name in fields_of(ScanArgs) if hasattr(checked, name)}
    values.update(with_channel_mean=with_channel_mean, chunk_size=chunk_size)
    return ScanArgs(**values)


def contract_cotangents(args: Any, result: Any, seed: int = 0):
    """Random ScanCotangents in the dtype and shape of each output (empty for an absent channel mean)."""
    from pna_kernels.contract import ScanCotangents

    gen = torch.Generator(device=result.out.device).manual_seed(seed)

    def like(t: Tensor) -> Tensor:
        return torch.randn(t.shape, generator=gen, device=t.device, dtype=t.dtype)

    return ScanCotangents(
        grad_out=like(result.out), grad_entropy=like(result.entropy), grad_halt=like(result.halt_logits),
        grad_last_state=like(result.last_state),
        grad_channel_mean=like(result.channel_mean) if args.with_channel_mean else result.out.new_empty(0),
    )


@dataclass
class Call:
    """One timed pass of one backend: fn runs it once without synchronising, or error says why it cannot."""

    backend: str
    path: str
    pass_name: str
    fn: Callable[[], Any] | None = None
    error: str | None = None


def describe(exc: BaseException) -> str:
    """One line for a report: the exception's type and the first line of its message, at most 240 characters."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:240]


def backend_calls(backend: str, x: dict[str, Tensor | None], skip_reason: str | None = None) -> list[Call]:
    """The four passes of PASSES for one backend on inputs x; a pass that cannot run carries its reason."""
    from pna_kernels import selective_scan
    from pna_kernels.backends import backend_module, unsupported_reason

    calls = [Call(backend, path, pass_name) for path, pass_name in PASSES]
    u = x["u"]
    try:
        reason = skip_reason or unsupported_reason(backend, u.device, u.dtype, x["A"].shape[1])
    except Exception as exc:  # e.g. a backend name this checkout does not have
        reason = describe(exc)
    if reason is not None:
        for c in calls:
            c.error = f"not run: {reason}"
        return calls
    contract_fwd, contract_bwd, api_fwd, api_both = calls
    module = backend_module(backend)
    try:
        why = contract_reason(module)
        if why is not None:
            raise TypeError(why)
        args = prevalidated_args(x, module.CHUNK_SIZE)
        result = module.scan_forward(args)
        saved, cot = result.saved, contract_cotangents(args, result)
        contract_fwd.fn = lambda: module.scan_forward(args)
        contract_bwd.fn = lambda: module.scan_backward(args, saved, cot)
    except Exception as exc:  # recorded per row: the run goes on with the other passes and backends
        contract_fwd.error = contract_bwd.error = describe(exc)

    def scan(inputs: dict[str, Tensor | None]) -> list[Tensor]:
        res = selective_scan(
            inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], inputs["D"], inputs["z"],
            inputs["delta_bias"], True, True, halt_weight=inputs["halt_weight"], halt_bias=inputs["halt_bias"],
            initial_state=inputs["initial_state"], backend=backend, check_finite=False,
        )
        return [t for t in res if t is not None]

    try:
        leaves = {k: None if v is None else v.detach().requires_grad_(True) for k, v in x.items()}
        wrt = tuple(v for v in leaves.values() if v is not None)
        outputs = scan(leaves)
        gen = torch.Generator(device=u.device).manual_seed(1)
        grads = tuple(torch.randn(o.shape, generator=gen, device=o.device, dtype=o.dtype) for o in outputs)
        del outputs
        api_fwd.fn = lambda: scan(x)
        api_both.fn = lambda: torch.autograd.grad(scan(leaves), wrt, grads)
    except Exception as exc:
        api_fwd.error = api_both.error = describe(exc)
    return calls


def profiled_calls(calls: list[Call]) -> list[Call]:
    """The runnable passes worth profiling: the contract's fwd and bwd where the backend takes the contract (the
    api runs the same kernels plus validation), else the api's fwd+bwd."""
    runnable = [c for c in calls if c.fn is not None]
    contract = [c for c in runnable if c.path == "contract"]
    return contract or [c for c in runnable if c.pass_name == "fwd+bwd"]


@dataclass
class Row:
    """One line of the timing table."""

    shape: str
    backend: str
    path: str
    pass_name: str
    timing: Timing | None = None
    floors: Floors | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.floors is not None:
            d["floors"].update(floor_s=self.floors.floor_s, bound=self.floors.bound)
            if self.timing is not None:
                d["achieved"] = self.floors.achieved(self.timing.median_ms / 1e3)
        return d


def time_calls(shape: Shape, calls: list[Call], timer: Any, copy_bytes_per_s: float | None,
               rate: SfuRate) -> list[Row]:
    """Time every runnable call and attach the floors of its pass; failures become rows with the reason."""
    fp = footprint(shape)
    rows = []
    for c in calls:
        row = Row(shape.name, c.backend, c.path, c.pass_name, error=c.error,
                  floors=pass_floors(fp, c.pass_name, copy_bytes_per_s, rate))
        if c.fn is not None:
            try:
                row.timing = timer.measure(c.fn)
            except Exception as exc:
                row.error = describe(exc)
        rows.append(row)
    return rows
