"""Run a command with a hard time limit: the command and everything it started are killed when it overruns."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import IO, Callable


@dataclass(frozen=True)
class Finished:
    """How a limited command ended: exit code (None if killed at its limit), seconds, captured output."""

    exit_code: int | None
    seconds: float
    output: str = ""

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None


def run_limited(cmd: list[str], limit_s: float, env: dict[str, str] | None = None, stdout: IO | None = None,
                on_tick: Callable[[], None] | None = None, tick_s: float = 10.0) -> Finished:
    """Run cmd in its own process group for at most limit_s seconds, then SIGTERM the group (SIGKILL 3 s later).

    Output goes to `stdout` (a file) when given, else it is captured and returned (stderr merged in). With a file,
    on_tick() is called every tick_s seconds while the command runs (the driver refreshes its report).
    """
    start = time.monotonic()
    deadline = start + max(limit_s, 0.1)
    proc = subprocess.Popen(cmd, env=env, stdout=stdout if stdout is not None else subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, text=stdout is None)
    if stdout is not None:
        while True:
            try:
                proc.wait(timeout=max(0.1, min(tick_s, deadline - time.monotonic())))
                return Finished(proc.returncode, time.monotonic() - start)
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    _kill_group(proc)
                    proc.wait()
                    return Finished(None, time.monotonic() - start)
                if on_tick is not None:
                    on_tick()
    try:
        out, _ = proc.communicate(timeout=deadline - time.monotonic())
        return Finished(proc.returncode, time.monotonic() - start, out or "")
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, _ = proc.communicate()
        return Finished(None, time.monotonic() - start, out or "")


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, give it 3 s, then SIGKILL whatever of the group is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGTERM:
            try:
                proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                pass
