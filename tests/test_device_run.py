"""The prepared GPU run (bench/device): its dry mode on the CPU, the stage limits, the report written as it goes,
and the floor arithmetic checked by hand."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO))

from bench.device import floors, harness  # noqa: E402
from bench.device.plan import (MAX_OUTPUT_FILES, OUTPUT_FILES, REALISTIC, SKIPPED, STAGES, TOTAL_LIMIT_S,  # noqa: E402
                               Stage, total_budget_s)
from bench.device.report import render  # noqa: E402
from bench.device.run import Driver  # noqa: E402
from bench.device.stages import parse_ncu_csv  # noqa: E402


def python_stage(code: str, *args: str):
    """A Driver command that runs `code` in a fresh interpreter (the stage and its deadline are ignored)."""
    return lambda stage, deadline: [sys.executable, "-c", code, *args]


# ------------------------------------------------------------------------------------------------- dry mode
@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dry-out")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
    proc = subprocess.run([sys.executable, "-m", "bench.device.run", "--dry", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    return proc, out


def test_dry_run_exits_zero_and_prints_the_plan(dry_run):
    proc, _ = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in STAGES:
        assert f"{stage.name:<10} {stage.budget_s:>4} s" in proc.stdout
    assert f"total      {total_budget_s():>4} s" in proc.stdout
    for name in OUTPUT_FILES:
        assert name in proc.stdout


def test_dry_run_writes_only_the_announced_files(dry_run):
    _, out = dry_run
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(OUTPUT_FILES)
    assert len(written) <= MAX_OUTPUT_FILES


def test_dry_run_report_covers_every_stage(dry_run):
    _, out = dry_run
    state = json.loads((out / "results.json").read_text())
    assert [s["name"] for s in state["stages"]] == [s.name for s in STAGES]
    statuses = {s["name"]: s["status"] for s in state["stages"]}
    assert statuses["env"] == statuses["smoke"] == statuses["timing"] == statuses["variants"] == "ok", statuses
    assert statuses["profile"] == "ok", statuses
    assert statuses["build"] == statuses["sanitizer"] == statuses["traffic"] == "skipped", statuses
    report = (out / "report.md").read_text()
    assert "DRY RUN" in report and "the run is complete" in report
    rows = state["data"]["timing"]["rows"]
    timed = [r for r in rows if r.get("timing")]
    assert timed, rows
    # The cuda backend is not built in a dry run: its rows carry the reason instead of a time.
    assert all("not run" in r["error"] for r in rows if r["backend"] == "cuda")
    for r in timed:
        assert r["achieved"] == pytest.approx(r["floors"]["floor_s"] / (r["timing"]["median_ms"] / 1e3))
    # Variants: the torch backend stands in for the default build; the others say why they did not run.
    variants = state["data"]["variants"]["rows"]
    assert [r["variant"] for r in variants if r.get("timing")] == ["default", "default"]
    assert all("dry run" in r["error"] for r in variants if r["variant"] != "default")
    assert "## Kernel variants" in report


# -------------------------------------------------------------------------------------------------- budgets
def test_stage_budgets_fit_the_slot():
    assert total_budget_s() <= TOTAL_LIMIT_S <= 480
    assert all(s.budget_s > 0 for s in STAGES)
    assert len({s.name for s in STAGES}) == len(STAGES)
    assert len(OUTPUT_FILES) <= MAX_OUTPUT_FILES <= 8


# ------------------------------------------------------------------------------------------ the driver itself
def test_overrunning_stage_is_killed_and_the_run_goes_on(tmp_path):
    stages = (Stage("first", 20, "exits 0"), Stage("hang", 2, "sleeps past its limit"),
              Stage("skip", 20, "says it has nothing to do"), Stage("crash", 20, "exits 1"))
    commands = {"first": "pass", "hang": "import time; time.sleep(60)", "skip": f"raise SystemExit({SKIPPED})",
                "crash": "raise SystemExit(1)"}
    driver = Driver(stages, tmp_path / "out", tmp_path / "work", dry=True,
                    command=lambda stage, deadline: [sys.executable, "-c", commands[stage.name]])
    state = driver.run()
    status = {s["name"]: s["status"] for s in state["stages"]}
    assert status == {"first": "ok", "hang": "killed", "skip": "skipped", "crash": "failed"}
    hang = state["stages"][1]
    assert hang["seconds"] < 15 and "killed at its 2 s limit" in hang["note"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| 2 | hang | 2 | killed |" in report
    assert "stage 4 of 4, `crash`, failed; the run is complete" in report


def test_report_names_the_stage_a_stopped_run_was_in(tmp_path):
    """While a stage runs, report.md already says so: a run killed there leaves that report."""
    out = tmp_path / "out"
    snapshot = tmp_path / "snapshot.md"
    copy = python_stage("import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])", str(out / "report.md"),
                        str(snapshot))
    stages = (Stage("env", 20, ""), Stage("timing", 20, ""))
    Driver(stages, out, tmp_path / "work", dry=True, command=copy).run()
    seen = snapshot.read_text()  # the copy made by the second stage, while it ran
    assert "Reached: stage 2 of 2, `timing`, RUNNING" in seen
    assert "| 1 | env | 20 | ok |" in seen and "| 2 | timing | 20 | running |" in seen


def test_run_total_limit_skips_stages_with_no_time_left(tmp_path):
    stages = (Stage("slow", 3, "sleeps"), Stage("late", 20, "never starts"))
    driver = Driver(stages, tmp_path / "out", tmp_path / "work", dry=True, total_limit_s=4,
                    command=python_stage("import time; time.sleep(60)"))
    state = driver.run()
    assert [s["status"] for s in state["stages"]] == ["killed", "skipped"]
    assert "no time left" in state["stages"][1]["note"]


def test_stage_results_are_read_even_when_it_is_killed(tmp_path):
    """A stage writes its rows as it goes: those written before the kill reach the report."""
    work = tmp_path / "work"
    code = ("import json, sys, time; open(sys.argv[1], 'w').write(json.dumps({'shape': 's', 'rows': "
            "[{'backend': 'triton', 'dtype': 'float32', 'rtol': 1e-4, 'passed': True, 'max_output_err': 1e-7, "
            "'max_grad_err': 2e-7, 'worst': 'dA'}]})); time.sleep(60)")
    driver = Driver((Stage("smoke", 2, ""),), tmp_path / "out", work, dry=True,
                    command=python_stage(code, str(work / "smoke.json")))
    state = driver.run()
    assert state["stages"][0]["status"] == "killed"
    assert "| triton | float32 | 1.00e-07 | 2.00e-07 | dA |" in (tmp_path / "out" / "report.md").read_text()


# --------------------------------------------------------------------------------------------------- floors
def test_floor_bytes_of_the_realistic_shape_by_hand():
    """(batch 8, L 2048, D 1536, N 16, bf16, ungrouped B/C, with z, halt head and initial state)."""
    fp = harness.footprint(REALISTIC)
    bdl = 8 * 1536 * 2048  # 25,165,824 elements of u, delta, z, out
    bnl = 8 * 16 * 2048
    inputs = 2 * 3 * bdl + 2 * 2 * bnl + 4 * (2 * 1536 * 16 + 2 * 1536 + 1) + 4 * 8 * 1536 * 16
    outputs = 2 * bdl + 4 * (2 * 8 * 2048) + 4 * 8 * 1536 * 16
    assert inputs == 153_038_852 and outputs == 51_249_152
    assert fp.input_bytes() == inputs and fp.output_bytes() == outputs
    assert fp.pass_cost("fwd") == (204_288_004, 402_653_184)
    assert fp.pass_cost("bwd") == (357_326_856, 402_653_184)
    assert fp.pass_cost("fwd+bwd") == (561_614_860, 805_306_368)
    with pytest.raises(ValueError, match="pass_name"):
        fp.pass_cost("backward")


def test_channel_mean_and_groups_change_the_floor():
    base = floors.ScanFootprint(batch=2, length=10, dim=8, dstate=4, act_bytes=4)
    with_mean = floors.ScanFootprint(batch=2, length=10, dim=8, dstate=4, act_bytes=4, with_channel_mean=True)
    grouped = floors.ScanFootprint(batch=2, length=10, dim=8, dstate=4, act_bytes=4, groups=2)
    assert with_mean.output_bytes() - base.output_bytes() == 4 * 2 * 10 * 4
    assert grouped.input_bytes() - base.input_bytes() == 4 * 2 * 2 * 4 * 10


def test_sfu_and_hbm_floors_by_hand():
    rate = floors.sfu_rate()  # datasheet figures: 132 SMs x 1.98 GHz x 16
    assert rate.per_s == pytest.approx(4.18176e12)
    assert "datasheet" in rate.source
    fwd = floors.pass_floors(harness.footprint(REALISTIC), "fwd", copy_bytes_per_s=4.3e12, rate=rate)
    assert fwd.hbm_s == pytest.approx(204_288_004 / 4.3e12)  # 47.5 us
    assert fwd.sfu_s == pytest.approx(402_653_184 / 4.18176e12)  # 96.3 us
    assert fwd.bound == "SFU" and fwd.floor_s == fwd.sfu_s
    assert fwd.achieved(2 * fwd.sfu_s) == pytest.approx(0.5)
    measured = floors.sfu_rate(sms=132, clock_hz=1.755e9)
    assert measured.per_s == pytest.approx(132 * 1.755e9 * 16) and "device" in measured.source
    no_copy = floors.pass_floors(harness.footprint(REALISTIC), "bwd", copy_bytes_per_s=None, rate=rate)
    assert no_copy.hbm_s is None and no_copy.bound == "SFU"
    slow_memory = floors.pass_floors(harness.footprint(REALISTIC), "bwd", copy_bytes_per_s=1e12, rate=rate)
    assert slow_memory.bound == "HBM" and slow_memory.floor_s == pytest.approx(357_326_856 / 1e12)


# -------------------------------------------------------------------------------------------------- harness
class FakeTimer:
    """Calls fn once and reports a fixed time, so the fractions can be checked by hand."""

    def __init__(self, ms: float):
        self.ms = ms

    def measure(self, fn):
        fn()
        return harness.Timing(self.ms, self.ms, self.ms, self.ms, 1)


def test_time_calls_records_failures_per_row_and_fractions():
    def broken():
        raise RuntimeError("kernel launch failed\nsecond line")

    calls = [harness.Call("triton", "contract", "fwd", fn=lambda: None),
             harness.Call("triton", "contract", "bwd", fn=broken),
             harness.Call("cuda", "api", "fwd+bwd", error="not run: no nvcc")]
    rate = floors.SfuRate(per_s=4e12, source="test")
    rows = harness.time_calls(REALISTIC, calls, FakeTimer(0.25), copy_bytes_per_s=4e12, rate=rate)
    ok, failed, skipped = (r.as_dict() for r in rows)
    assert ok["timing"]["median_ms"] == 0.25 and ok["error"] is None
    # fwd: SFU floor 402,653,184 / 4e12 s = 100.7 us > HBM 204,288,004 / 4e12 s = 51.1 us
    assert ok["floors"]["bound"] == "SFU"
    assert ok["achieved"] == pytest.approx(402_653_184 / 4e12 / 0.25e-3)
    assert failed["timing"] is None and failed["error"] == "RuntimeError: kernel launch failed"
    assert skipped["error"] == "not run: no nvcc" and "achieved" not in skipped
    assert skipped["floors"]["floor_bytes"] == 561_614_860
    report = render({"mode": "device", "stages": [{"name": "timing", "budget_s": 1, "status": "ok"}],
                     "data": {"timing": {"rows": [ok, failed, skipped]}}})
    assert "| b8-L2048-D1536-N16-bf16 | triton | contract | fwd | 0.250 |" in report
    assert "40.3%" in report  # 100.66 us / 250 us


class OldBackend:
    __name__ = "old"

    @staticmethod
    def scan_forward(u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias, initial_state, softplus, chunk):
        raise AssertionError("not called")

    @staticmethod
    def scan_backward(*args):
        raise AssertionError("not called")


class ContractBackend:
    __name__ = "new"

    @staticmethod
    def scan_forward(args):
        return args

    @staticmethod
    def scan_backward(args, saved, cot):
        return args


def test_contract_reason_tells_old_backends_apart():
    assert "old positional signature" in harness.contract_reason(OldBackend)
    assert harness.contract_reason(ContractBackend) is None


def test_prevalidated_args_are_the_contract_dataclass():
    from pna_kernels.contract import ScanArgs

    shape = harness.Shape(batch=1, length=5, dim=4, dstate=2, dtype="float32")
    args = harness.prevalidated_args(harness.make_inputs(shape, "cpu"), chunk_size=16)
    assert isinstance(args, ScanArgs) and args.chunk_size == 16 and not args.with_channel_mean
    assert args.B.shape == (1, 1, 2, 5) and args.delta_softplus


# ---------------------------------------------------------------------------------------------- ncu parsing
def test_parse_ncu_csv_assigns_kernels_to_passes_by_marker():
    text = "\n".join([
        "==PROF== Connected to process",
        '"ID","Process ID","Kernel Name","dram__bytes_read.sum","dram__bytes_write.sum","gpu__time_duration.sum"',
        '"","","","byte","byte","nsecond"',
        '"0","1","at::cuda::(anonymous namespace)::spin_kernel(long)","0","0","1,000"',
        '"1","1","scan_forward_kernel","1,000,000","500,000","20,000"',
        '"2","1","combine_sums_kernel","1000","1000","3000"',
        '"3","1","at::cuda::(anonymous namespace)::spin_kernel(long)","0","0","1000"',
        '"4","1","scan_backward_kernel","3000000","2000000","50000"',
    ])
    order = [{"shape": "s", "backend": "cuda", "path": "contract", "pass_name": "fwd"},
             {"shape": "s", "backend": "cuda", "path": "contract", "pass_name": "bwd"}]
    kernels, passes = parse_ncu_csv(text, order)
    assert [(k["pass_name"], k["name"]) for k in kernels] == [
        ("fwd", "scan_forward_kernel"), ("fwd", "combine_sums_kernel"), ("bwd", "scan_backward_kernel")]
    assert kernels[0]["us"] == 20.0
    assert [p["bytes"] for p in passes] == [1_502_000, 5_000_000]
    assert parse_ncu_csv("ncu: no kernels were profiled", order) == ([], [])


def test_report_compares_variants_with_the_default_build():
    rate = floors.SfuRate(per_s=4e12, source="test")
    rows = []
    for name, ms, err in (("default", 2.0, None), ("fast_log2", 1.0, 3e-6)):
        row = harness.time_calls(REALISTIC, [harness.Call(name, "contract", "fwd", fn=lambda: None)],
                                 FakeTimer(ms), 4e12, rate)[0].as_dict()
        rows.append({**row, "variant": name, "build": "found", "max_err_vs_default": err,
                     "worst": err and "entropy"})
    report = render({"mode": "device", "stages": [], "data": {
        "variants": {"shape": REALISTIC.name, "rows": rows},
        "build": {"variants": [{"name": "fast_log2", "status": "built", "seconds": 21.5}]}}})
    line = next(ln for ln in report.splitlines() if ln.startswith("| fast_log2 | fwd |"))
    assert "| 2.00x |" in line and "| 3.00e-06 (entropy) | found |" in line
    assert "| default | fwd | 2.000 |" in report and "| 1.00x |" in report
    assert "fast_log2 built 21.5 s" in report


def test_variants_are_valid_kernel_options():
    from bench.device.plan import VARIANTS
    from bench.device.variants import variant_options

    names = [o.name() for o in variant_options()]
    assert VARIANTS[0] == {} and names[0] == "default" and len(set(names)) == len(names)
    for wanted in ("plain", "fast_log2", "precompute_gates", "reuse_decay", "parallel_combine", "chunk64-max_state64",
                   "max_state32-lanes_per_channel4", "max_state64-lanes_per_channel8",
                   "max_state64-lanes_per_channel16"):
        assert wanted in names


def test_readme_lists_the_stages_and_limits_of_the_plan():
    readme = (REPO / "bench" / "README.md").read_text()
    for stage in STAGES:
        assert f"| `{stage.name}` | {stage.budget_s} | {stage.purpose} |" in readme, stage.name
    for name in OUTPUT_FILES:
        assert f"| `{name}` |" in readme


def test_report_puts_measured_bytes_beside_the_floor_of_the_same_shape():
    calls = [harness.Call("cuda", "contract", "fwd", fn=lambda: None)]
    rate = floors.SfuRate(per_s=4e12, source="test")
    realistic = harness.time_calls(REALISTIC, calls, FakeTimer(1.0), 4e12, rate)[0].as_dict()
    other_shape = dict(realistic, shape="b1-L8-D8-N16-bf16")
    passes = [{"shape": REALISTIC.name, "backend": "cuda", "path": "contract", "pass_name": "fwd", "bytes": 3.5e8}]
    report = render({"mode": "device", "stages": [], "data": {
        "timing": {"rows": [realistic, other_shape]}, "traffic": {"passes": passes, "kernels": []}}})
    lines = [ln for ln in report.splitlines() if "| cuda | contract | fwd |" in ln]
    assert "| 204.3 | 350 |" in lines[0]  # floor MB, moved MB
    assert "| 204.3 | - |" in lines[1]


@pytest.mark.parametrize("output,exit_code,result,errors", [
    ("========= COMPUTE-SANITIZER\nworkload triton api fwd: ran\n========= ERROR SUMMARY: 0 errors", 0, "clean", 0),
    ("========= Invalid __global__ write of size 4 bytes\n========= ERROR SUMMARY: 3 errors", 99, "ERRORS", 3),
    ("========= RACECHECK SUMMARY: 2 hazards displayed (2 errors, 0 warnings)", 99, "ERRORS", 2),
    ("========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)", 0, "clean", 0),
    ("Traceback (most recent call last):\n========= ERROR SUMMARY: 0 errors", 1, "exit 1", 0),
    ("", None, "killed at its limit", None),
], ids=["memcheck-clean", "memcheck-errors", "racecheck-hazards", "racecheck-clean", "workload-failed", "killed"])
def test_sanitizer_summary(output, exit_code, result, errors):
    from bench.device.stages import sanitizer_summary

    got = sanitizer_summary(output, exit_code)
    assert got["result"].startswith(result) and got["errors"] == errors


def _contract_adapter():
    """A backend module on the contract: the torch backend itself once it takes ScanArgs, else a thin adapter
    of its positional functions (so the contract path of the harness is exercised before the backends move)."""
    import types

    from pna_kernels import parallel
    from pna_kernels.contract import ScanGrads, ScanResult

    if harness.contract_reason(parallel) is None:
        return parallel
    module = types.ModuleType("pna_test_contract_backend")
    module.CHUNK_SIZE, module.supports = parallel.CHUNK_SIZE, parallel.supports
    inputs = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "halt_weight", "halt_bias", "initial_state")

    def scan_forward(args):
        out, entropy, halt, last, checkpoints, sums = parallel.scan_forward(
            *(getattr(args, n) for n in inputs), args.delta_softplus, args.chunk_size)
        return ScanResult(out, entropy, halt, last, out.new_empty(0), checkpoints, sums)

    def scan_backward(args, saved, cot):
        return ScanGrads(*parallel.scan_backward(
            cot.grad_out, cot.grad_entropy, cot.grad_halt, cot.grad_last_state, *(getattr(args, n) for n in inputs),
            saved.checkpoints, saved.entropy_sums, args.delta_softplus, args.chunk_size))

    module.scan_forward, module.scan_backward = scan_forward, scan_backward
    return module


def test_contract_path_is_timed_on_prevalidated_args(monkeypatch):
    from pna_kernels import backends

    module = _contract_adapter()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(backends.BACKENDS, "contract-test", module.__name__)
    shape = harness.Shape(batch=1, length=12, dim=4, dstate=2, dtype="float32")
    calls = harness.backend_calls("contract-test", harness.make_inputs(shape, "cpu"))
    fwd, bwd = calls[0], calls[1]
    assert (fwd.path, fwd.pass_name, bwd.pass_name) == ("contract", "fwd", "bwd")
    assert fwd.error is None and bwd.error is None
    result, grads = fwd.fn(), bwd.fn()
    assert result.out.shape == (1, 4, 12) and result.checkpoints.shape == (1, 1, 4, 2)
    assert grads.u.shape == (1, 4, 12) and grads.A.shape == (4, 2) and torch.isfinite(grads.delta).all()
    rows = harness.time_calls(shape, calls[:2], FakeTimer(2.0), copy_bytes_per_s=1e9,
                              rate=floors.SfuRate(per_s=1e12, source="test"))
    assert [r.timing.median_ms for r in rows] == [2.0, 2.0] and all(r.error is None for r in rows)
    assert [harness.profiled_calls(calls)[i].pass_name for i in range(2)] == ["fwd", "bwd"]


def test_rows_reach_the_report_while_the_stage_still_runs(tmp_path):
    """The driver refreshes the report during a stage, so a whole run killed mid-stage keeps the rows so far."""
    out, work, snapshot = tmp_path / "out", tmp_path / "work", tmp_path / "snapshot.md"
    code = ("import json, shutil, sys, time; open(sys.argv[1], 'w').write(json.dumps({'rows': [{'backend': 'cuda', "
            "'dtype': 'bfloat16', 'rtol': 3e-2, 'passed': False, 'max_output_err': 0.5, 'max_grad_err': 0.25, "
            "'worst': 'dB'}]})); time.sleep(2); shutil.copy(sys.argv[2], sys.argv[3])")
    driver = Driver((Stage("smoke", 30, ""),), out, work, dry=True,
                    command=python_stage(code, str(work / "smoke.json"), str(out / "report.md"), str(snapshot)))
    driver.tick_s = 0.3
    driver.run()
    seen = snapshot.read_text()
    assert "`smoke`, RUNNING" in seen and "| cuda | bfloat16 | 5.00e-01 | 2.50e-01 | dB |" in seen


def test_unknown_backend_gives_rows_with_the_reason():
    shape = harness.Shape(batch=1, length=4, dim=2, dstate=2, dtype="float32")
    calls = harness.backend_calls("no-such-backend", harness.make_inputs(shape, "cpu"))
    assert len(calls) == len(harness.PASSES)
    assert all(c.fn is None and "no-such-backend" in c.error for c in calls)


def test_only_rejects_an_unknown_stage_with_exit_code_2():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "bench.device.run", "--dry", "--only", "env,timings"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--only: unknown stage(s) timings" in proc.stderr
