"""The run's report: Markdown (report.md) and data (results.json), rewritten atomically after every stage change.

The state is a plain dict: {"mode", "started", "stages": [stage records], "data": {stage name: its results}}.
A stage record has name, budget_s, status (pending, running, ok, failed, skipped, killed), seconds and note.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DONE = ("ok", "failed", "skipped", "killed")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_outputs(out_dir: Path, state: dict[str, Any]) -> None:
    """Write report.md and results.json for the current state."""
    _atomic_write(out_dir / "results.json", json.dumps(state, indent=1, default=str) + "\n")
    _atomic_write(out_dir / "report.md", render(state))


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cell = lambda v: str(v).replace("|", "/").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def reached(state: dict[str, Any]) -> str:
    """One line: the last stage started and how it ended (or that it is still running)."""
    stages = state["stages"]
    started = [s for s in stages if s["status"] != "pending"]
    if not started:
        return "Reached: no stage started yet."
    last = started[-1]
    index = stages.index(last) + 1
    if last["status"] == "running":
        return (f"Reached: stage {index} of {len(stages)}, `{last['name']}`, RUNNING (started, not finished: if "
                f"this is the final report, the run was stopped inside this stage).")
    done = all(s["status"] in DONE for s in stages)
    return f"Reached: stage {index} of {len(stages)}, `{last['name']}`, {last['status']}" + (
        "; the run is complete." if done else ".")


def render(state: dict[str, Any], brief: bool = False) -> str:
    """The Markdown report; brief leaves out the per-kernel tables (for the console)."""
    data = state.get("data", {})
    dry = state.get("mode") == "dry"
    lines = ["# pna device run" + (" (DRY RUN on the CPU)" if dry else ""), ""]
    if dry:
        lines += ["Dry run: CPU tensors at a tiny size, wall-clock times; these are not GPU numbers.", ""]
    lines += [f"Started {state.get('started', '-')}. {reached(state)}", ""]
    lines += ["## Stages", ""]
    lines += _table(["#", "stage", "limit s", "status", "seconds", "note"], [
        [i, s["name"], s["budget_s"], s["status"], _fmt(s.get("seconds"), ".1f"), s.get("note") or ""]
        for i, s in enumerate(state["stages"], 1)])
    for title, section in (("Environment", _environment), ("Correctness smoke", _smoke), ("Timing", _timing),
                           ("Kernel variants", _variants), ("Per-kernel breakdown", _profile),
                           ("Sanitizer", _sanitizer), ("Memory traffic", _traffic)):
        body = section(data)
        if brief and section in (_profile, _traffic) and len(body) > 2:  # a table, not just a note
            body = ["(per-kernel rows: report.md)", ""]
        if body:
            lines += [f"## {title}", ""] + body
    return "\n".join(lines)


def _environment(data: dict[str, Any]) -> list[str]:
    env = data.get("env")
    if not env:
        return []
    keys = ("device", "capability", "sms", "l2_mib", "memory_gib", "driver", "driver_cuda", "torch", "torch_cuda",
            "triton", "nvcc", "python", "sm_clock_mhz", "max_sm_clock_mhz", "copy_gb_per_s", "sfu_per_s",
            "sfu_source")
    rows = [[k, _fmt(env[k], ".4g") if isinstance(env[k], float) else env[k]] for k in keys if k in env]
    return _table(["", ""], rows) + (
        ["copy_gb_per_s: a device-to-device copy of " + _fmt(env.get("copy_mib"), ".0f") + " MiB, bytes read + "
         "written over the median time; it is the bandwidth of every HBM floor below.", ""]
        if "copy_gb_per_s" in env else [])


def _smoke(data: dict[str, Any]) -> list[str]:
    smoke = data.get("smoke")
    if not smoke or not smoke.get("rows"):
        return []
    rows = [[r["backend"], r["dtype"], _fmt(r.get("max_output_err"), ".2e"), _fmt(r.get("max_grad_err"), ".2e"),
             r.get("worst") or "-", _fmt(r.get("rtol"), ".0e"), _fmt(r.get("contract_out_err"), ".2e"),
             {True: "pass", False: "FAIL", None: "-"}[r.get("passed")], r.get("error") or ""]
            for r in smoke["rows"]]
    return [f"Shape {smoke.get('shape')}; relative error ||got - want|| / ||want|| against the float64 oracle on "
            "the same (rounded) inputs, over out, entropy, halt_logits, last_state and every input gradient. "
            "Recorded, not asserted.", ""] + _table(
        ["backend", "dtype", "max output err", "max grad err", "worst", "rtol", "contract out err", "result",
         "note"], rows)


def _traffic_by_pass(data: dict[str, Any]) -> dict[tuple[str, str, str, str], float]:
    """Bytes moved per (shape, backend, path, pass) as measured by Nsight Compute, if the traffic stage ran."""
    traffic = data.get("traffic") or {}
    return {(p["shape"], p["backend"], p["path"], p["pass_name"]): p["bytes"] for p in traffic.get("passes", [])}


def _timing_cells(r: dict[str, Any]) -> list[Any]:
    """median ms, p20-p80 ms, reps, floor MB of a timing row (harness.Row.as_dict)."""
    t, f = r.get("timing") or {}, r.get("floors") or {}
    spread = f"{t['p20_ms']:.3f}-{t['p80_ms']:.3f}" if t else "-"
    return [_fmt(t.get("median_ms")), spread, _fmt(t.get("reps"), "d"), _fmt(f.get("floor_bytes", 0) / 1e6, ".4g")]


def _floor_cells(r: dict[str, Any]) -> list[Any]:
    """floor us, bound, achieved of a timing row."""
    f = r.get("floors") or {}
    return [_fmt(f.get("floor_s", 0) * 1e6, ".4g"), f.get("bound", "-"),
            "-" if r.get("achieved") is None else f"{100 * r['achieved']:.1f}%"]


def _timing(data: dict[str, Any]) -> list[str]:
    timing = data.get("timing")
    if not timing or not timing.get("rows"):
        return []
    moved = _traffic_by_pass(data)
    rows = []
    for r in timing["rows"]:
        f = r.get("floors") or {}
        hbm = f.get("hbm_s")
        measured = moved.get((r["shape"], r["backend"], r["path"], r["pass_name"]))
        rows.append([
            r["shape"], r["backend"], r["path"], r["pass_name"], *_timing_cells(r),
            "-" if measured is None else f"{measured / 1e6:.4g}",
            "-" if hbm is None else f"{hbm * 1e6:.4g}", _fmt(f.get("sfu_s", 0) * 1e6, ".4g"),
            *_floor_cells(r), r.get("error") or "",
        ])
    head = [f"Timer: {timing.get('timer', '-')}. Copy bandwidth {_fmt(timing.get('copy_gb_per_s'), '.0f')} GB/s; "
            f"SFU rate {_fmt(timing.get('sfu_per_s'), '.3g')} exp/s. Floors: bench/README.md. achieved = "
            "max(HBM floor, SFU floor) / median.", ""]
    return head + _table(
        ["shape", "backend", "path", "pass", "median ms", "p20-p80 ms", "reps", "floor MB", "moved MB (ncu)",
         "HBM floor us", "SFU floor us", "floor us", "bound", "achieved", "note"], rows)


def _variants(data: dict[str, Any]) -> list[str]:
    var = data.get("variants")
    if not var or not var.get("rows"):
        return []
    default = {r["pass_name"]: (r.get("timing") or {}).get("median_ms") for r in var["rows"]
               if r["variant"] == "default"}
    rows = []
    for r in var["rows"]:
        median, base = (r.get("timing") or {}).get("median_ms"), default.get(r["pass_name"])
        speedup = f"{base / median:.2f}x" if median and base else "-"
        err = "-" if r.get("max_err_vs_default") is None else f"{r['max_err_vs_default']:.2e} ({r['worst']})"
        rows.append([r["variant"], r["pass_name"], *_timing_cells(r), speedup, *_floor_cells(r), err,
                     r.get("build") or "-", r.get("error") or ""])
    build = data.get("build") or {}
    built = [f"{b['name']} {b['status']} {_fmt(b.get('seconds'), '.1f')} s" for b in build.get("variants") or []]
    return [f"Shape {var.get('shape')}; contract passes of each KernelOptions build of the CUDA kernels "
            f"(cuda_options.py), timer {var.get('timer', '-')}. vs default = default median / this median; "
            "err vs default: the largest relative difference from the default build's outputs (and, except plain, "
            "gradients). Recorded, not asserted.", ""] + _table(
        ["variant", "pass", "median ms", "p20-p80 ms", "reps", "floor MB", "vs default", "floor us", "bound",
         "achieved", "err vs default", "build", "note"], rows) + (
        [f"Libraries (build stage, folder {build.get('cache', '-')}, target sm_"
         f"{',sm_'.join(build.get('archs') or ['-'])}, nvcc {build.get('nvcc') or 'not found'}): "
         + "; ".join(built) + ".", ""] if built else [])


def _profile(data: dict[str, Any]) -> list[str]:
    prof = data.get("profile")
    if not prof or not prof.get("rows"):
        return []
    rows = [[r["backend"], r["path"], r["pass_name"], r["name"], r["calls"], _fmt(r["us"], ".1f"),
             f"{100 * r['share']:.0f}%"] for r in prof["rows"]]
    return [f"Shape {prof.get('shape')}; one profiled call after a warm-up; time per kernel summed over its "
            f"calls ({prof.get('unit', 'device kernels')}).", ""] + _table(
        ["backend", "path", "pass", "kernel", "calls", "us", "share"], rows)


def _sanitizer(data: dict[str, Any]) -> list[str]:
    san = data.get("sanitizer")
    if not san:
        return []
    if not san.get("tools"):
        return [san.get("note", "not run"), ""]
    rows = [[t["tool"], t["result"], _fmt(t.get("errors"), "d"), _fmt(t.get("exit_code"), "d"),
             _fmt(t.get("seconds"), ".1f"), t.get("summary") or ""] for t in san["tools"]]
    return [f"Shape {san.get('shape')}; fwd+bwd through the public API of: {', '.join(san.get('backends', []))}.",
            ""] + _table(["tool", "result", "errors", "exit code", "seconds", "summary"], rows)


def _traffic(data: dict[str, Any]) -> list[str]:
    traffic = data.get("traffic")
    if not traffic:
        return []
    if not traffic.get("kernels"):
        return [traffic.get("note", "not run"), ""]
    rows = [[k["backend"], k["path"], k["pass_name"], k["name"], _fmt(k["read"] / 1e6, ".1f"),
             _fmt(k["write"] / 1e6, ".1f"), _fmt(k.get("us"), ".1f")] for k in traffic["kernels"]]
    return [f"Shape {traffic.get('shape')}; Nsight Compute dram__bytes_read/write.sum per kernel (caches flushed "
            "between kernels, clocks as found).", ""] + _table(
        ["backend", "path", "pass", "kernel", "read MB", "write MB", "us"], rows)
