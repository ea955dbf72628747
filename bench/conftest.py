"""Benchmark set-up: a `measure` fixture that times a call with pytest-benchmark and records throughput, and a
summary table printed at the end of the run with each backend's speed relative to "torch" and to the oracle
measured in the same run."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch


@dataclass
class Measurement:
    """One timed case: median seconds per call, the tokens it processes and its memory-traffic floor in bytes."""

    shape: str
    mode: str
    backend: str
    seconds: float
    tokens: int
    floor_bytes: int | None
    note: str = ""  # printed after the row: its time over its baseline row's, when measure() was given one


MEASUREMENTS: list[Measurement] = []


@pytest.fixture
def measure(benchmark):
    """measure(fn, shape=, mode=, backend=, tokens=, floor_bytes=None, baseline=None): time fn and record its
    throughput.

    fn must finish its work before returning (synchronise CUDA). floor_bytes, given on GPU, is what reading every
    input once and writing every output once moves; achieved GB/s is floor_bytes / median time. baseline names
    another backend timed earlier in the same run at the same shape and mode: this row's median over that one's
    goes to extra_info["time_ratio"] and is printed beside the row (nothing when the baseline was not timed).
    """

    def run(fn, *, shape: str, mode: str, backend: str, tokens: int, floor_bytes: int | None = None,
            baseline: str | None = None) -> None:
        benchmark.group = f"{shape} {mode}"
        benchmark(fn)
        if benchmark.disabled:  # --benchmark-disable: fn ran once, untimed
            return
        seconds = benchmark.stats.stats.median
        benchmark.extra_info["tokens_per_s"] = tokens / seconds
        if floor_bytes is not None:
            benchmark.extra_info["floor_bytes"] = floor_bytes
            benchmark.extra_info["achieved_gb_per_s"] = floor_bytes / seconds / 1e9
        row = Measurement(shape, mode, backend, seconds, tokens, floor_bytes)
        base = next((m for m in MEASUREMENTS if (m.shape, m.mode, m.backend) == (shape, mode, baseline)), None)
        if base is not None:
            benchmark.extra_info["time_ratio"] = {"baseline": baseline, "ratio": seconds / base.seconds}
            row.note = f"time {seconds / base.seconds:.2f}x {baseline}"
        MEASUREMENTS.append(row)

    return run


def _ratio(baseline: Measurement | None, m: Measurement) -> str:
    """How many times faster m is than the baseline measured at the same shape and mode."""
    return "-" if baseline is None else f"{baseline.seconds / m.seconds:.2f}x"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not MEASUREMENTS:
        return
    tr = terminalreporter
    tr.section("pna kernel benchmarks (median per call; 'vs X' = time of X / time of this row)")
    tr.write_line(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
                  + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    header = (f"{'shape':<25}{'mode':<9}{'backend':<14}{'ms':>10}{'Mtok/s':>10}{'vs torch':>10}{'vs oracle':>11}"
              f"{'vs plain':>10}{'GB/s':>8}")
    tr.write_line(header)
    tr.write_line("-" * len(header))
    for m in sorted(MEASUREMENTS, key=lambda m: (m.shape, m.mode, m.seconds)):
        same = {o.backend: o for o in MEASUREMENTS if o.shape == m.shape and o.mode == m.mode}
        gbps = "-" if m.floor_bytes is None else f"{m.floor_bytes / m.seconds / 1e9:.0f}"
        tr.write_line(
            f"{m.shape:<25}{m.mode:<9}{m.backend:<14}{m.seconds * 1e3:>10.3f}{m.tokens / m.seconds / 1e6:>10.3f}"
            f"{_ratio(same.get('torch'), m):>10}{_ratio(same.get('reference'), m):>11}"
            f"{_ratio(same.get('plain-triton'), m):>10}{gbps:>8}" + (f"  {m.note}" if m.note else "")
        )
