"""The one-command device run (bench/device_run.sh), and its dry mode for a machine without a GPU.

    python3 -m bench.device.run [--out DIR]     on a GPU machine, from the repository root with PYTHONPATH=.
    python3 -m bench.device.run --dry [--out DIR]   on any machine: the same stages on CPU tensors at a tiny size

The driver prints the plan, then runs the stages of plan.STAGES in order, each in its own process with its own
time limit (a stage that overruns is killed and recorded, and the run goes on), and rewrites report.md and
results.json in the output directory (default: $OUT, else ./device-run) before and after every stage and every
10 s while one runs, so a run stopped at any point leaves a report that names the stage it reached. Each stage's
own output goes to stages.log. The driver itself imports no torch.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .plan import MAX_OUTPUT_FILES, OUTPUT_FILES, SKIPPED, STAGES, TOTAL_LIMIT_S, Stage, plan_text
from .proc import run_limited
from .report import render, write_outputs

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_CAP_BYTES = 400_000  # per stage in stages.log: the head and tail are kept
MIN_STAGE_S = 5


def stage_command(stage: Stage, work: Path, dry: bool, deadline: float) -> list[str]:
    cmd = [sys.executable, "-m", "bench.device.run", "--stage", stage.name, "--work", str(work),
           "--deadline", f"{deadline:.1f}"]
    return cmd + (["--dry"] if dry else [])


def child_env() -> dict[str, str]:
    """The stages' environment: the checkout importable, unbuffered output, compiled (not interpreted) Triton."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.update(PYTHONUNBUFFERED="1", TRITON_INTERPRET="0")
    return env


def _trim_section(log: Path, offset: int) -> None:
    """Keep the head and tail of the log written since offset if it is longer than LOG_CAP_BYTES."""
    size = log.stat().st_size
    if size - offset <= LOG_CAP_BYTES:
        return
    with open(log, "rb+") as f:
        f.seek(offset)
        section = f.read()
        keep = LOG_CAP_BYTES // 2
        cut = b"\n[... %d bytes cut ...]\n" % (len(section) - 2 * keep)
        f.seek(offset)
        f.truncate()
        f.write(section[:keep] + cut + section[-keep:])


class Driver:
    """Runs stages in order with their limits and keeps the report current.

    command(stage, deadline) gives the command line of a stage (tests replace it); a stage's results are read
    from <work>/<stage>.json after it ends.
    """

    def __init__(self, stages: tuple[Stage, ...], out: Path, work: Path, dry: bool,
                 total_limit_s: float = TOTAL_LIMIT_S,
                 command: Callable[[Stage, float], list[str]] | None = None):
        self.stages, self.out, self.work, self.dry = stages, out, work, dry
        self.total_limit_s = total_limit_s
        self.tick_s = 10.0  # while a stage runs, its rows so far reach the report this often
        self.command = command or (lambda stage, deadline: stage_command(stage, work, dry, deadline))
        self.state = {
            "mode": "dry" if dry else "device",
            "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "stages": [{"name": s.name, "budget_s": s.budget_s, "status": "pending", "seconds": None, "note": ""}
                       for s in stages],
            "data": {},
        }

    def write(self) -> None:
        import json

        for s in self.stages:
            path = self.work / f"{s.name}.json"
            if path.exists():
                try:
                    self.state["data"][s.name] = json.loads(path.read_text())
                except ValueError:  # being rewritten: keep the last copy
                    pass
        write_outputs(self.out, self.state)

    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        log = self.out / "stages.log"
        log.write_text("")
        begin = time.monotonic()
        self.write()
        for stage, rec in zip(self.stages, self.state["stages"]):
            left = self.total_limit_s - (time.monotonic() - begin)
            limit = min(stage.budget_s, left)
            if limit < min(MIN_STAGE_S, stage.budget_s):  # too little of the run is left to start it
                rec.update(status="skipped", note=f"no time left in the run's {self.total_limit_s:.0f} s")
                self.write()
                continue
            rec.update(status="running", note=f"started at +{time.monotonic() - begin:.0f} s, limit {limit:.0f} s")
            self.write()
            print(f"== stage {stage.name} (limit {limit:.0f} s)", flush=True)
            offset = log.stat().st_size
            with open(log, "a") as f:
                f.write(f"===== stage {stage.name} (limit {limit:.0f} s)\n")
                f.flush()
                done = run_limited(self.command(stage, time.time() + limit), limit, env=child_env(), stdout=f,
                                   on_tick=self.write, tick_s=self.tick_s)
            _trim_section(log, offset)
            rec["seconds"] = round(done.seconds, 1)
            self.write()  # reads the stage's results
            result = self.state["data"].get(stage.name, {})
            if done.timed_out:
                rec.update(status="killed", note=f"killed at its {limit:.0f} s limit (results up to then kept)")
            elif done.exit_code == 0:
                rec.update(status="ok", note="")
            elif done.exit_code == SKIPPED:
                rec.update(status="skipped", note=result.get("skipped", ""))
            else:
                rec.update(status="failed", note=result.get("error") or f"exit code {done.exit_code}; see stages.log")
            self.write()
            print(f"   {rec['status']} in {done.seconds:.1f} s {rec['note']}", flush=True)
        return self.state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.device.run", description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="run the stages on CPU tensors at a tiny size")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: $OUT, else ./device-run)")
    parser.add_argument("--only", default=None, metavar="STAGE,...",
                        help="run only these stages, in plan order (keep env and build: later stages read them)")
    parser.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workload", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.stage or args.workload:  # inside a stage's own process
        from . import stages

        if args.workload:
            return stages.WORKLOADS[args.workload](args.work, args.dry)
        return stages.run_stage(args.stage, args.work, args.dry, args.deadline or time.time() + 3600)

    stages = STAGES
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - {s.name for s in STAGES})
        if unknown:
            parser.error(f"--only: unknown stage(s) {', '.join(unknown)}; expected some of "
                         f"{', '.join(s.name for s in STAGES)}")
        stages = tuple(s for s in STAGES if s.name in wanted)
    out = args.out or Path(os.environ.get("OUT") or "device-run")
    work = args.work or Path(tempfile.mkdtemp(prefix="pna-device-run-"))
    print(plan_text(stages), flush=True)
    print(f"output: {out}\n", flush=True)
    state = Driver(stages, out, work, args.dry).run()
    written = sorted(p.name for p in out.iterdir() if p.is_file())
    extra = [name for name in written if name not in OUTPUT_FILES]
    print("\n" + render(state, brief=True), flush=True)
    print(f"files in {out}: {', '.join(written)}" + (f" (unexpected: {extra})" if extra else ""), flush=True)
    return 0 if len(written) <= MAX_OUTPUT_FILES else 1


if __name__ == "__main__":
    sys.exit(main())
