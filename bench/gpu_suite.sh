#!/usr/bin/env bash
# The LONG GPU suite, from a checkout on a machine with an NVIDIA GPU and time to spare (15 minutes or more):
#
#     bash bench/gpu_suite.sh
#
# For a short GPU slot (<= 10 minutes, nothing installable) run bench/device_run.sh instead: staged, time-limited,
# its report written as it goes; its report is the one committed to bench/results/. This suite is not for such a
# slot: it may pip-install, runs every CPU and training benchmark and the compile-only CUDA test, and writes its
# report only at the end.
#
# Uses the machine's CUDA build of torch (installs one from PyPI only if torch is missing or CPU-only), installs
# pna from this checkout without dependencies, prints the GPU/driver/torch/triton/nvcc versions, measures the
# device-to-device copy bandwidth, runs the GPU tests (tests/test_backends.py, tests/test_cuda.py, the compiled Triton tests, the CUDA
# compile test) and the benchmarks (pytest bench/ --benchmark-only), and writes gpu_report.md, the pytest logs and
# the raw JSON to $OUT if set, else bench/results/ (see bench/results/README.md). Exits non-zero if a test failed.
set -uo pipefail
cd "$(dirname "$0")/.."
results="${OUT:-bench/results}"
mkdir -p "$results"
export TRITON_INTERPRET=0  # compiled Triton kernels (tests/conftest.py would pick the interpreter otherwise)

if ! python -c "import torch" 2>/dev/null; then
    echo "== torch not found: installing it from PyPI (its Linux wheels are CUDA builds)"
    python -m pip install -q torch || { echo "could not install torch"; exit 1; }
fi
python -c "import sys, torch; sys.exit(None if torch.cuda.is_available() else f'torch {torch.__version__} sees no \
CUDA device (a CPU-only build, or no GPU/driver): install a CUDA build of torch')" || exit 1
# --no-build-isolation: pip need not fetch setuptools; fall back to the checkout on PYTHONPATH if that fails.
python -m pip install -q --no-deps --no-build-isolation -e . \
    || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python -c "import pytest_benchmark" 2>/dev/null || python -m pip install -q pytest pytest-benchmark

echo "== versions"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$results/nvidia_smi.txt"
python - "$results" <<'EOF'
import json, subprocess, sys, torch
try:
    import triton
    triton_version = triton.__version__
except ImportError:
    triton_version = "not installed"
from pna_kernels.cuda import find_nvcc
nvcc = find_nvcc()
info = {
    "device": torch.cuda.get_device_name(),
    "capability": "sm_%d%d" % torch.cuda.get_device_capability(),
    "torch": torch.__version__,
    "torch CUDA": torch.version.cuda,
    "triton": triton_version,
    "nvcc": subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    if nvcc else "not found",
}
print("\n".join(f"{k}: {v}" for k, v in info.items()))
json.dump(info, open(f"{sys.argv[1]}/versions.json", "w"), indent=1)
EOF

echo "== device copy bandwidth (1 GiB, read + write)"
python - "$results" <<'EOF'
import json, sys, torch
x = torch.empty(2**28, device="cuda")
y = torch.empty_like(x)
for _ in range(3):
    y.copy_(x)
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
reps = 20
start.record()
for _ in range(reps):
    y.copy_(x)
end.record()
end.synchronize()
seconds = start.elapsed_time(end) / 1e3 / reps
gbps = 2 * x.numel() * x.element_size() / seconds / 1e9
print(f"{gbps:.0f} GB/s")
json.dump({"copy_gb_per_s": gbps}, open(f"{sys.argv[1]}/copy_bandwidth.json", "w"))
EOF

echo "== GPU tests"
python -m pytest -q -p no:cacheprovider tests/test_backends.py tests/test_cuda.py tests/test_triton.py tests/test_cuda_compile.py \
    --junitxml="$results/gpu_tests.xml" 2>&1 | tee "$results/gpu_tests.log"
tests_status=${PIPESTATUS[0]}

echo "== benchmarks"
python -m pytest -q -p no:cacheprovider bench/ --benchmark-only --benchmark-json="$results/bench.json" 2>&1 \
    | tee "$results/bench.log"

python - "$results" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

out = Path(sys.argv[1])
info = json.loads((out / "versions.json").read_text())
copy = json.loads((out / "copy_bandwidth.json").read_text())["copy_gb_per_s"]
lines = ["# GPU suite report", "", "| | |", "|---|---|"]
lines += [f"| {k} | {v} |" for k, v in info.items()]
lines += [f"| device copy bandwidth | {copy:.0f} GB/s |", ""]
tests = "Tests (tests/test_backends.py, tests/test_cuda.py, tests/test_triton.py, tests/test_cuda_compile.py): "
if (out / "gpu_tests.xml").exists():
    suite = ET.parse(out / "gpu_tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests += (f"{suite.get('tests')} run, {suite.get('failures')} failed, {suite.get('errors')} errors, "
              f"{suite.get('skipped')} skipped (gpu_tests.log).")
else:
    tests += "pytest wrote no results (gpu_tests.log)."
lines += [tests, ""]
bench = out / "bench.json"
rows = []
for b in json.loads(bench.read_text())["benchmarks"] if bench.exists() else []:
    shape, mode = b["group"].rsplit(" ", 1)
    name = b["name"]
    backend = (b["params"] or {}).get("backend") or ("plain-triton" if "plain" in name else "mamba-ssm")
    rows.append((shape, mode, backend, b["stats"]["median"], b["extra_info"]))
lines += ["| shape | mode | backend | median ms | Mtok/s | vs torch | vs triton | vs plain-triton | GB/s | % of copy |",
          "|---|---|---|---|---|---|---|---|---|---|"]
for shape, mode, backend, sec, extra in sorted(rows, key=lambda r: (r[0], r[1], r[3])):
    same = {r[2]: r[3] for r in rows if r[0] == shape and r[1] == mode}
    ratio = lambda base: f"{same[base] / sec:.2f}x" if base in same else "-"
    gbps = extra.get("achieved_gb_per_s")
    lines.append(f"| {shape} | {mode} | {backend} | {sec * 1e3:.3f} | {extra['tokens_per_s'] / 1e6:.2f} | "
                 f"{ratio('torch')} | {ratio('triton')} | {ratio('plain-triton')} | {'-' if gbps is None else f'{gbps:.0f}'} | "
                 f"{'-' if gbps is None else f'{100 * gbps / copy:.0f}%'} |")
lines += ["", "'vs X': median time of X / median time of this row. GB/s: the benchmark's memory-traffic floor "
          "(bench/README.md) / median time; % of copy: that over the measured copy bandwidth."]
(out / "gpu_report.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "== written to $results"
exit "$tests_status"
