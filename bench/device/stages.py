"""The bodies of the run's stages, each run in its own process by `python3 -m bench.device.run --stage NAME`.

A stage writes its results to <work>/<name>.json as it goes (so a stage killed at its limit still leaves what it
finished) and ends with exit code 0 (ok), SKIPPED (it had nothing to do here, e.g. no compute-sanitizer) or 1
(failed, the reason in "error"). Later stages read earlier ones' results (the copy bandwidth, whether the CUDA
backend built). In dry mode every stage runs on CPU tensors at a tiny size, so this file is exercised without a
GPU; the GPU-only tools (compute-sanitizer, Nsight Compute, the CUDA build) are skipped with a reason.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .plan import (BASELINE_ROWS, DRY_BACKENDS, DRY_SHAPE, GPU_BACKENDS, REALISTIC, SANITIZER_SHAPE, SKIPPED,
                   SMOKE_SHAPE, TIMING_SHAPES, TRAFFIC_SHAPE, VARIANT_SHAPE, Shape)
from .proc import run_limited



class StageSkipped(Exception):
    """The stage has nothing to do on this machine (the message says why)."""


class StageContext:
    """What a stage knows: its name, the work directory shared by the stages, dry mode and its deadline."""

    def __init__(self, name: str, work: Path, dry: bool, deadline: float):
        self.name, self.work, self.dry, self.deadline = name, work, dry, deadline
        self.data: dict[str, Any] = {}

    def record(self, **values: Any) -> None:
        """Merge values into this stage's results and write them out now."""
        self.data.update(values)
        tmp = self.work / f"{self.name}.json.tmp"
        tmp.write_text(json.dumps(self.data, default=str))
        os.replace(tmp, self.work / f"{self.name}.json")

    def read(self, stage: str) -> dict[str, Any]:
        path = self.work / f"{stage}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def seconds_left(self) -> float:
        return self.deadline - time.time()

    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"

    def cuda_skip_reason(self) -> str | None:
        """Why the cuda backend must not be called (the build stage did not make it usable), else None."""
        build = self.read("build")
        if build.get("cuda_ok"):
            return None
        return f"the build stage did not make the CUDA backend usable ({build.get('reason', 'it did not finish')})"

    def skip_reason(self, backend: str) -> str | None:
        return self.cuda_skip_reason() if backend == "cuda" else None


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def _tool(name: str) -> str | None:
    """Path of a CUDA tool: on PATH, under CUDA_HOME, or in the usual install folders."""
    found = shutil.which(name)
    if found:
        return found
    homes = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"] + sorted(glob.glob("/opt/nvidia/nsight-compute/*"))
    for home in homes:
        for candidate in (Path(home) / "bin" / name, Path(home) / name, Path(home) / name / name):
            if home and candidate.is_file():
                return str(candidate)
    return None


def _nvidia_smi(fields: str) -> list[str]:
    out = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=15).stdout
    return [v.strip() for v in _first_line(out).split(",")]


# --------------------------------------------------------------------------------------------------- stages
def stage_env(ctx: StageContext) -> None:
    import torch

    from .floors import sfu_rate

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "torch_cuda": torch.version.cuda}
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception as exc:  # the report says why; the triton rows will too
        info["triton"] = f"not importable ({_first_line(str(exc))})"
    ctx.record(**info)
    sms = clock_hz = None
    if not ctx.dry:
        props = torch.cuda.get_device_properties(0)
        sms = props.multi_processor_count
        info.update(device=torch.cuda.get_device_name(0), capability="sm_%d%d" % torch.cuda.get_device_capability(0),
                    sms=sms, l2_mib=getattr(props, "L2_cache_size", 0) / 2**20, memory_gib=props.total_memory / 2**30)
        try:
            fields = _nvidia_smi("driver_version,clocks.max.sm,clocks.sm") + ["", ""]
            info["driver"] = fields[0]
            for key, value in (("max_sm_clock_mhz", fields[1]), ("sm_clock_mhz", fields[2])):
                info[key] = float(value) if value.replace(".", "", 1).isdigit() else value or "-"
            if isinstance(info["max_sm_clock_mhz"], float):
                clock_hz = info["max_sm_clock_mhz"] * 1e6
            header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=15).stdout
            match = re.search(r"CUDA Version:\s*([\d.]+)", header)
            info["driver_cuda"] = match.group(1) if match else "-"
        except (OSError, subprocess.SubprocessError) as exc:
            info["driver"] = f"nvidia-smi failed ({_first_line(str(exc))})"
        nvcc = _tool("nvcc")
        version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout if nvcc else ""
        info["nvcc"] = (version.strip().splitlines() or ["not found"])[-1]
    else:
        info.update(device=f"CPU ({platform.processor() or platform.machine()}), dry run")
    rate = sfu_rate(sms, clock_hz)
    info.update(sfu_per_s=rate.per_s, sfu_source=rate.source)
    ctx.record(**info)
    bytes_per_s, mib = copy_bandwidth(ctx.device)
    ctx.record(copy_bytes_per_s=bytes_per_s, copy_gb_per_s=bytes_per_s / 1e9, copy_mib=mib)


def copy_bandwidth(device: str) -> tuple[float, int]:
    """(bytes read + written per second, MiB copied) of a device-to-device copy: median of 20 timed copies after
    3 warm-ups (CUDA events on a GPU; 5 wall-clock copies of 16 MiB on the CPU)."""
    import torch

    from .harness import WallClockTimer, summarize

    mib = 1024 if device == "cuda" else 16
    x = torch.ones(mib * 2**18, device=device)  # float32: 2**18 elements per MiB
    y = torch.empty_like(x)
    if device == "cuda":
        for _ in range(3):
            y.copy_(x)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(20)]
        for start, end in events:
            start.record()
            y.copy_(x)
            end.record()
        torch.cuda.synchronize()
        median_ms = summarize([s.elapsed_time(e) for s, e in events]).median_ms
    else:
        median_ms = WallClockTimer(reps=5).measure(lambda: y.copy_(x)).median_ms
    return 2 * x.numel() * x.element_size() / (median_ms / 1e3), mib


def stage_build(ctx: StageContext) -> None:
    """Every kernel variant's nvcc library (plan.VARIANTS, the default first): loaded from the cache folder
    (PNA_CUDA_CACHE; bench/device_run.sh points it at the carried prebuilt copy), else built here with nvcc, all
    variants at once. cuda_ok says whether the backend's default build loads (later stages skip cuda if not)."""
    if ctx.dry:
        ctx.record(cuda_ok=False, reason="dry run: no CUDA device (a device run loads the carried nvcc libraries or "
                                         "builds them here, see bench/device/variants.py)")
        raise StageSkipped("dry run: the CUDA libraries are not built on the CPU")
    import torch

    from pna_kernels import cuda
    from pna_kernels.backends import unsupported_reason

    from .variants import ensure_variants, variant_options

    start = time.monotonic()
    device = torch.device("cuda", torch.cuda.current_device())
    capability = torch.cuda.get_device_capability(device)
    nvcc = cuda.find_nvcc()
    ctx.record(cache=str(cuda.cache_dir()), capability=capability, nvcc=nvcc, variants=[])
    archs = cuda.target_archs()
    ctx.record(archs=archs)
    rows: list[dict[str, Any]] = []

    def done(row: dict[str, Any]) -> None:
        rows.append(row)
        ctx.record(variants=rows)

    ensure_variants(variant_options(), archs, cuda.cache_dir(), device=device, capability=capability,
                    jobs=os.cpu_count() or 4, on_result=done)
    reason = unsupported_reason("cuda", device, torch.bfloat16, 16)
    ctx.record(cuda_ok=reason is None, reason=reason, seconds=time.monotonic() - start)
    if reason is not None:
        raise RuntimeError(f"the CUDA backend is not usable: {reason}")


def stage_smoke(ctx: StageContext) -> None:
    import torch

    from pna_kernels.backends import backend_module, unsupported_reason
    from pna_kernels.testing import (RTOL, SCAN_OUTPUT_NAMES, cotangents, oracle_with_grads, relative_error,
                                     scan_with_grads)

    from .harness import contract_reason, describe, make_inputs, prevalidated_args

    shape = DRY_SHAPE if ctx.dry else SMOKE_SHAPE
    backends = DRY_BACKENDS if ctx.dry else GPU_BACKENDS
    rows: list[dict[str, Any]] = []
    ctx.record(shape=shape.name, rows=rows)
    for dtype in ("float32", "bfloat16"):
        x = make_inputs(Shape(shape.batch, shape.length, shape.dim, shape.dstate, dtype), ctx.device, seed=1)
        cot = cotangents(shape.batch, shape.dim, shape.length, shape.dstate, ctx.device)
        want_out, want_grad = oracle_with_grads(x, True, cot)
        for backend in backends:
            row: dict[str, Any] = {"backend": backend, "dtype": dtype, "rtol": RTOL[getattr(torch, dtype)],
                                   "passed": None}
            rows.append(row)
            reason = ctx.skip_reason(backend) or unsupported_reason(backend, torch.device(ctx.device),
                                                                    getattr(torch, dtype), shape.dstate)
            if reason is not None:
                row["error"] = f"not run: {reason}"
                ctx.record(rows=rows)
                continue
            try:
                got_out, got_grad = scan_with_grads(x, backend, True, cot)
                _sync(ctx.device)
                out_err = {n: relative_error(got_out[n], want_out[n]) for n in SCAN_OUTPUT_NAMES}
                grad_err = {f"d{n}": relative_error(got_grad[n], want_grad[n]) for n in want_grad}
                errors = {**out_err, **grad_err}
                worst = max(errors, key=errors.get)
                row.update(max_output_err=max(out_err.values()), max_grad_err=max(grad_err.values()),
                           worst=f"{worst} {errors[worst]:.2e}", passed=all(e <= row["rtol"] for e in errors.values()))
                module = backend_module(backend)
                why = contract_reason(module)
                if why is None:
                    res = module.scan_forward(prevalidated_args(x, module.CHUNK_SIZE))
                    row["contract_out_err"] = relative_error(res.out, want_out["out"])
                else:
                    row["error"] = f"contract path not checked: {why}"
            except Exception as exc:
                row["error"] = describe(exc)
            ctx.record(rows=rows)


def stage_timing(ctx: StageContext) -> None:
    import torch

    from .floors import SfuRate, sfu_rate
    from .harness import CudaEventTimer, WallClockTimer, backend_calls, make_inputs, time_calls

    env = ctx.read("env")
    copy_bytes_per_s = env.get("copy_bytes_per_s")
    rate = SfuRate(env["sfu_per_s"], env["sfu_source"]) if "sfu_per_s" in env else sfu_rate()
    timer = WallClockTimer() if ctx.dry else CudaEventTimer()
    rows: list[dict[str, Any]] = []
    ctx.record(timer=type(timer).__name__, copy_gb_per_s=(copy_bytes_per_s or 0) / 1e9, sfu_per_s=rate.per_s,
               rows=rows)
    plan = [(DRY_SHAPE, DRY_BACKENDS)] if ctx.dry else [
        (shape, GPU_BACKENDS + tuple(b for b, s in BASELINE_ROWS if s == shape)) for shape in TIMING_SHAPES]
    for shape, backends in plan:
        x = make_inputs(shape, ctx.device)
        for backend in backends:
            calls = backend_calls(backend, x, ctx.skip_reason(backend))
            for row in time_calls(shape, calls, timer, copy_bytes_per_s, rate):
                rows.append(row.as_dict())
                ctx.record(rows=rows)
            del calls
        del x
        if not ctx.dry:
            torch.cuda.empty_cache()


def _variant_library(ctx: StageContext, options: Any, build_rows: dict[str, dict[str, Any]]) -> Any:
    """What runs a variant: its nvcc library (loaded by the build stage's rules, never rebuilt here); in a dry run
    the torch backend stands in for the default build and the other variants are not run."""
    if ctx.dry:
        if options.name() != "default":
            raise RuntimeError("not run: dry run (the CUDA variants need a GPU)")
        from pna_kernels.backends import backend_module

        return backend_module("torch")
    row = build_rows.get(options.name())
    if row is None or row["status"] == "failed":
        raise RuntimeError(f"not built: {row['error'] if row else 'the build stage did not reach it'}")
    from pna_kernels import cuda

    return cuda.library(options)


def _variant_outputs(result: Any, grads: Any, plain: bool) -> dict[str, Any]:
    """The tensors two variants should agree on: out and last_state; unless plain (which leaves out entropy and
    halt, and their terms of the gradients), also entropy, halt_logits and every input gradient."""
    import dataclasses

    got = {"out": result.out, "last_state": result.last_state}
    if not plain:
        got.update(entropy=result.entropy, halt_logits=result.halt_logits)
        got.update({f"d{f.name}": getattr(grads, f.name) for f in dataclasses.fields(grads)
                    if getattr(grads, f.name) is not None})
    return got


def stage_variants(ctx: StageContext) -> None:
    """Contract fwd and bwd of every kernel variant (plan.VARIANTS) at the realistic shape, timed like the timing
    stage, with the largest relative difference of its results from the default build's (recorded, not asserted)."""
    import torch

    from pna_kernels.testing import relative_error

    from .floors import SfuRate, sfu_rate
    from .harness import (Call, CudaEventTimer, WallClockTimer, contract_cotangents, describe, make_inputs,
                          prevalidated_args, time_calls)
    from .variants import variant_options

    env = ctx.read("env")
    copy_bytes_per_s = env.get("copy_bytes_per_s")
    rate = SfuRate(env["sfu_per_s"], env["sfu_source"]) if "sfu_per_s" in env else sfu_rate()
    timer = WallClockTimer() if ctx.dry else CudaEventTimer()
    shape = DRY_SHAPE if ctx.dry else VARIANT_SHAPE
    build_rows = {r["name"]: r for r in ctx.read("build").get("variants", [])}
    rows: list[dict[str, Any]] = []
    ctx.record(shape=shape.name, timer=type(timer).__name__, rows=rows)
    x = make_inputs(shape, ctx.device)
    reference: dict[str, Any] | None = None
    for options in variant_options():
        name = options.name()
        calls = [Call(name, "contract", "fwd"), Call(name, "contract", "bwd")]
        errors: dict[str, float] = {}
        try:
            lib = _variant_library(ctx, options, build_rows)
            args = prevalidated_args(x, lib.CHUNK_SIZE if ctx.dry else options.chunk)
            result = lib.scan_forward(args)
            saved, cot = result.saved, contract_cotangents(args, result)
            got = _variant_outputs(result, lib.scan_backward(args, saved, cot), options.plain)
            if name == "default":
                reference = got
            elif reference is not None:
                errors = {k: relative_error(v, reference[k]) for k, v in got.items()}
            calls[0].fn = lambda lib=lib, args=args: lib.scan_forward(args)
            calls[1].fn = lambda lib=lib, args=args, saved=saved, cot=cot: lib.scan_backward(args, saved, cot)
            del result, got
        except Exception as exc:  # recorded per row: the run goes on with the next variant
            calls[0].error = calls[1].error = describe(exc)
        worst = max(errors, key=errors.get) if errors else None
        for row in time_calls(shape, calls, timer, copy_bytes_per_s, rate):
            rows.append({**row.as_dict(), "variant": name, "build": build_rows.get(name, {}).get("status"),
                         "max_err_vs_default": errors[worst] if worst else None, "worst": worst})
            ctx.record(rows=rows)
        del calls
        if not ctx.dry:
            torch.cuda.empty_cache()


def kernel_breakdown(fn: Callable[[], Any], device: str, top: int = 8) -> tuple[list[tuple[str, int, float]], str]:
    """[(name, calls, microseconds)] of the device kernels one call of fn launches (CPU: the top ops by self CPU
    time), largest first, and what was counted."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    fn()
    _sync(device)
    with profile(activities=activities) as prof:
        fn()
        _sync(device)
    events = prof.key_averages()
    if device == "cuda":
        kernels = [e for e in events if getattr(e, "device_type", None) == DeviceType.CUDA]
        if not kernels:  # older profilers attach kernels differently: take whatever has its own device time
            kernels = [e for e in events if getattr(e, "self_device_time_total", 0) > 0]
        timed = [(e.key, e.count, getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0.0))
                 for e in kernels]
        unit = "device kernels"
    else:
        timed = [(e.key, e.count, e.self_cpu_time_total) for e in events]
        unit = "CPU ops by self time (dry run)"
    timed.sort(key=lambda k: -k[2])
    return timed[:top], unit


def stage_profile(ctx: StageContext) -> None:
    from .harness import backend_calls, describe, make_inputs, profiled_calls

    shape, backends = workload_plan(ctx.dry, REALISTIC)
    rows: list[dict[str, Any]] = []
    ctx.record(shape=shape.name, rows=rows)
    x = make_inputs(shape, ctx.device)
    for backend in backends:
        for c in profiled_calls(backend_calls(backend, x, ctx.skip_reason(backend))):
            try:
                kernels, unit = kernel_breakdown(c.fn, ctx.device)
            except Exception as exc:
                rows.append({"backend": backend, "path": c.path, "pass_name": c.pass_name, "name": describe(exc),
                             "calls": 0, "us": 0.0, "share": 0.0})
                continue
            total = sum(k[2] for k in kernels) or 1.0
            rows += [{"backend": backend, "path": c.path, "pass_name": c.pass_name, "name": name[:90],
                      "calls": calls_n, "us": us, "share": us / total} for name, calls_n, us in kernels]
            ctx.record(rows=rows, unit=unit)


def _workload_command(ctx: StageContext, workload: str) -> list[str]:
    cmd = [sys.executable, "-m", "bench.device.run", "--workload", workload, "--work", str(ctx.work)]
    return cmd + (["--dry"] if ctx.dry else [])


def _tool_missing(ctx: StageContext, tool: str, workload: str) -> None:
    """Skip the stage: the tool is not run in a dry run (its workload runs on the CPU instead) or was not found."""
    if ctx.dry:
        done = run_limited(_workload_command(ctx, workload), ctx.seconds_left() - 3)
        print(done.output, flush=True)
        note = f"dry run: {tool} is not run on the CPU; its workload ran without it (exit {done.exit_code})"
    else:
        note = f"{tool} was not found"
    ctx.record(note=note)
    raise StageSkipped(note)


def stage_sanitizer(ctx: StageContext) -> None:
    shape, backends = workload_plan(ctx.dry, SANITIZER_SHAPE)
    ctx.record(shape=shape.name, backends=[b for b in backends if ctx.skip_reason(b) is None], tools=[])
    exe = None if ctx.dry else _tool("compute-sanitizer")
    if exe is None:
        _tool_missing(ctx, "compute-sanitizer", "sanitizer")
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")  # so out-of-bounds writes are not into the cache
    tools: list[dict[str, Any]] = []
    for i, tool in enumerate(("memcheck", "racecheck")):
        limit = (ctx.seconds_left() - 3) / (2 - i)
        cmd = [exe, "--tool", tool, "--error-exitcode", "99", "--print-limit", "20",
               *_workload_command(ctx, "sanitizer")]
        done = run_limited(cmd, limit, env=env)
        print(f"--- compute-sanitizer --tool {tool}: exit {done.exit_code}, {done.seconds:.1f} s", flush=True)
        print(done.output[-20000:], flush=True)
        tools.append({"tool": tool, "exit_code": done.exit_code, "seconds": done.seconds,
                      **sanitizer_summary(done.output, done.exit_code)})
        ctx.record(tools=tools)


def sanitizer_summary(output: str, exit_code: int | None) -> dict[str, Any]:
    """result (clean, ERRORS, killed at its limit, or the exit code), the error count and the summary lines of a
    compute-sanitizer run with --error-exitcode 99."""
    summary = [ln.strip("= \t") for ln in output.splitlines() if "SUMMARY" in ln]
    match = re.search(r"ERROR SUMMARY:\s*(\d+)", output) or re.search(r"\((\d+) errors?", output)
    errors = int(match.group(1)) if match else None
    if exit_code is None:
        result = "killed at its limit"
    elif exit_code == 99 or errors:
        result = "ERRORS"
    elif exit_code == 0 and errors == 0:
        result = "clean"
    else:
        result = f"exit {exit_code} (the workload failed; see stages.log)"
    return {"result": result, "errors": errors, "summary": "; ".join(summary)[:200]}


def stage_traffic(ctx: StageContext) -> None:
    ctx.record(shape=workload_plan(ctx.dry, TRAFFIC_SHAPE)[0].name)
    exe = None if ctx.dry else _tool("ncu")
    if exe is None:
        _tool_missing(ctx, "Nsight Compute (ncu)", "traffic")
    cmd = [exe, "--clock-control", "none", "--profile-from-start", "off", "--print-units", "base", "--csv",
           "--page", "raw", "--metrics", "dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum",
           *_workload_command(ctx, "traffic")]
    done = run_limited(cmd, ctx.seconds_left() - 3)
    print(done.output[-30000:], flush=True)
    order = ctx.read("traffic_order").get("passes", [])
    kernels, passes = parse_ncu_csv(done.output, order)
    note = "killed at its limit" if done.timed_out else f"ncu exit {done.exit_code}"
    ctx.record(kernels=kernels, passes=passes, note=note)
    if not kernels:
        raise RuntimeError(f"no kernel rows in Nsight Compute's output ({note}); see stages.log")


MARKER_KERNEL = "spin_kernel"  # torch.cuda._sleep's kernel: launched before each profiled pass as a separator


def parse_ncu_csv(text: str, order: list[dict[str, str]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Kernel rows (name, read, write bytes, us) of `ncu --csv --page raw` output, assigned to the passes of
    `order` by the marker kernel launched before each pass; and the bytes summed per pass."""
    start = text.find('"ID"')
    if start < 0:
        return [], []
    reader = csv.DictReader(io.StringIO(text[start:]))
    kernels: list[dict[str, Any]] = []
    index = -1
    for rec in reader:
        name = rec.get("Kernel Name") or ""
        try:
            read = float((rec.get("dram__bytes_read.sum") or "").replace(",", ""))
            write = float((rec.get("dram__bytes_write.sum") or "").replace(",", ""))
        except ValueError:
            continue  # the units row
        if MARKER_KERNEL in name:
            index += 1
            continue
        if not 0 <= index < len(order):
            continue
        ns = (rec.get("gpu__time_duration.sum") or "").replace(",", "")
        kernels.append({**order[index], "name": name[:90], "read": read, "write": write,
                        "us": float(ns) / 1e3 if ns else None})
    passes = []
    for p in order:
        mine = [k for k in kernels if all(k[f] == p[f] for f in p)]
        if mine:
            passes.append({**p, "bytes": sum(k["read"] + k["write"] for k in mine)})
    return kernels, passes


STAGE_BODIES: dict[str, Callable[[StageContext], None]] = {
    "env": stage_env, "build": stage_build, "smoke": stage_smoke, "timing": stage_timing,
    "variants": stage_variants, "profile": stage_profile, "sanitizer": stage_sanitizer, "traffic": stage_traffic,
}


def run_stage(name: str, work: Path, dry: bool, deadline: float) -> int:
    """Run one stage body; its exit code tells the driver ok (0), skipped (SKIPPED) or failed (1)."""
    ctx = StageContext(name, work, dry, deadline)
    try:
        STAGE_BODIES[name](ctx)
    except StageSkipped as exc:
        ctx.record(skipped=str(exc))
        return SKIPPED
    except Exception as exc:
        from .harness import describe

        ctx.record(error=describe(exc))
        raise
    return 0


# ------------------------------------------------------------------------------------------------ workloads
def workload_plan(dry: bool, shape: Shape) -> tuple[Shape, tuple[str, ...]]:
    """The shape and backends a tool's workload runs: the given shape on the GPU backends, or the dry ones."""
    return (DRY_SHAPE, DRY_BACKENDS) if dry else (shape, GPU_BACKENDS)


def workload_sanitizer(work: Path, dry: bool) -> int:
    """Every pass of every usable backend once at the sanitizer's tiny shape; 1 if any of them raised."""
    from .harness import backend_calls, describe, make_inputs

    ctx = StageContext("sanitizer_workload", work, dry, time.time() + 3600)
    shape, backends = workload_plan(dry, SANITIZER_SHAPE)
    x = make_inputs(shape, ctx.device, seed=2)
    failed = False
    for backend in backends:
        for c in backend_calls(backend, x, ctx.skip_reason(backend)):
            outcome = c.error
            if c.fn is not None:
                try:
                    c.fn()
                    _sync(ctx.device)
                    outcome = "ran"
                except Exception as exc:
                    outcome, failed = describe(exc), True
            print(f"workload {backend} {c.path} {c.pass_name}: {outcome}", flush=True)
    return 1 if failed else 0


def workload_traffic(work: Path, dry: bool) -> int:
    """Each usable backend's profiled passes (harness.profiled_calls) once each inside the profiler range, each
    preceded by a marker kernel; their order goes to traffic_order.json (no profiler range on the CPU)."""
    import torch

    from .harness import backend_calls, make_inputs, profiled_calls

    ctx = StageContext("traffic_order", work, dry, time.time() + 3600)
    shape, backends = workload_plan(dry, TRAFFIC_SHAPE)
    x = make_inputs(shape, ctx.device)
    order: list[dict[str, str]] = []
    for backend in backends:
        for c in profiled_calls(backend_calls(backend, x, ctx.skip_reason(backend))):
            c.fn()  # warm: compiled and loaded before the profiled range
            _sync(ctx.device)
            order.append({"shape": shape.name, "backend": backend, "path": c.path, "pass_name": c.pass_name})
            ctx.record(passes=order)
            if ctx.device == "cuda":
                torch.cuda.profiler.start()
                torch.cuda._sleep(1000)
            c.fn()
            _sync(ctx.device)
            if ctx.device == "cuda":
                torch.cuda.profiler.stop()
    return 0


WORKLOADS: dict[str, Callable[[Path, bool], int]] = {"sanitizer": workload_sanitizer, "traffic": workload_traffic}
