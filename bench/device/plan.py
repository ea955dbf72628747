"""What one device run does, in order, with each stage's time limit, the timed shapes and the files it writes.

The limits add up to at most TOTAL_LIMIT_S, so a run fits an 8-minute slot on a bare machine; the driver kills a
stage that overruns its limit, records it and goes on with the next one.
"""
from __future__ import annotations

from dataclasses import dataclass

TOTAL_LIMIT_S = 480
SKIPPED = 3  # exit code of a stage that had nothing to do on this machine (ok is 0, failed anything else)


@dataclass(frozen=True)
class Stage:
    """One stage of the run: runs in its own process, killed after budget_s seconds."""

    name: str
    budget_s: int
    purpose: str


STAGES: tuple[Stage, ...] = (
    Stage("env", 30, "device, versions of torch/triton/CUDA/driver, SM count and clock, device-to-device copy GB/s"),
    Stage("build", 100, "load the carried nvcc library of every kernel variant, or build it here with nvcc (all in "
                        "parallel); later stages skip cuda if the default does not load"),
    Stage("smoke", 55, "triton and cuda vs the float64 oracle on a small shape, fp32 and bf16: outputs and "
                       "gradients, relative error recorded against the tolerance (not asserted)"),
    Stage("timing", 125, "CUDA-event timing with warm-up and an L2 flush per rep: contract fwd/bwd on pre-validated "
                         "ScanArgs and the public API, with HBM and SFU floors"),
    Stage("variants", 50, "the CUDA kernel variants (KernelOptions) timed side by side at the realistic shape, "
                          "contract fwd and bwd, with their difference from the default build's results"),
    Stage("profile", 30, "torch.profiler per-kernel breakdown of each backend's passes at the realistic shape"),
    Stage("sanitizer", 55, "compute-sanitizer memcheck and racecheck of triton and cuda fwd+bwd on the smoke shape"),
    Stage("traffic", 35, "Nsight Compute DRAM bytes per kernel at the realistic shape (bytes actually moved)"),
)

# Files the run writes (and rewrites after every stage) in its output directory.
OUTPUT_FILES: dict[str, str] = {
    "report.md": "the Markdown report: device, versions, every stage's status and tables",
    "results.json": "the same results as data (stage statuses, rows)",
    "stages.log": "each stage's own output (compiler, sanitizer and profiler messages), trimmed per stage",
}
MAX_OUTPUT_FILES = 8


@dataclass(frozen=True)
class Shape:
    """A timed problem size; dtype is a torch dtype name."""

    batch: int
    length: int
    dim: int
    dstate: int
    dtype: str
    groups: int = 1

    @property
    def name(self) -> str:
        short = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[self.dtype]
        return f"b{self.batch}-L{self.length}-D{self.dim}-N{self.dstate}-{short}"


REALISTIC = Shape(batch=8, length=2048, dim=1536, dstate=16, dtype="bfloat16")
TIMING_SHAPES: tuple[Shape, ...] = (
    REALISTIC,
    Shape(batch=8, length=512, dim=1536, dstate=16, dtype="bfloat16"),
    Shape(batch=2, length=1024, dim=512, dstate=16, dtype="float32"),
)
GPU_BACKENDS = ("cuda", "triton")
# The vectorised PyTorch backend as a baseline, at the small shape only (it materialises every state).
BASELINE_ROWS = (("torch", TIMING_SHAPES[-1]),)
SMOKE_SHAPE = Shape(batch=2, length=75, dim=64, dstate=16, dtype="float32")  # L not a multiple of any chunk
SANITIZER_SHAPE = SMOKE_SHAPE  # the kernels the smoke stage compiled are reused under the sanitizer
TRAFFIC_SHAPE = REALISTIC
# The CUDA kernel variants the build stage makes and the variants stage times: the fields of
# pna_kernels.cuda_options.KernelOptions that differ from the defaults ({} is the default build, timed first).
VARIANTS: tuple[dict[str, object], ...] = (
    {},
    {"plain": True},
    {"lanes_per_channel": 4, "max_state": 32},
    {"lanes_per_channel": 8, "max_state": 64},
    {"lanes_per_channel": 16, "max_state": 64},
    {"fast_log2": True},
    {"precompute_gates": True},
    {"reuse_decay": True},
    {"parallel_combine": True},
    {"dbdc_reduction": "wide_blocks"},
    {"dbdc_reduction": "wide_blocks", "reuse_decay": True},
    {"forward_timesteps": True},
    {"chunk": 64, "max_state": 64},
    {"chunk": 64, "max_state": 64, "precompute_gates": True, "fast_log2": True, "reuse_decay": True,
     "parallel_combine": True},
    {"precompute_gates": True, "fast_log2": True, "reuse_decay": True, "parallel_combine": True,
     "dbdc_reduction": "wide_blocks"},
)
VARIANT_SHAPE = REALISTIC
# Where a prebuilt copy of the libraries is carried to the GPU machine (relative to the repository root; ignored by
# git): bench/device_run.sh points PNA_CUDA_CACHE here unless it is set.
PREBUILT_DIR = "build/pna-cuda"
PREBUILT_VARIANT_ARCHS = ("90",)  # H100/H200: what `python3 -m bench.device.prebuild` builds the variants for

# Dry mode (CPU): one tiny shape through the same code, timed by the wall clock.
DRY_SHAPE = Shape(batch=1, length=32, dim=16, dstate=4, dtype="float32")
DRY_BACKENDS = ("torch", "triton", "cuda")


def total_budget_s(stages: tuple[Stage, ...] = STAGES) -> int:
    return sum(s.budget_s for s in stages)


def plan_text(stages: tuple[Stage, ...] = STAGES) -> str:
    """The plan as printed by the run and by --dry: stages with budgets, the total, and the files written."""
    lines = ["plan (each stage runs in its own process and is killed at its limit):"]
    for i, s in enumerate(stages, 1):
        lines.append(f"  {i}. {s.name:<10} {s.budget_s:>4} s  {s.purpose}")
    lines.append(f"  total      {total_budget_s(stages):>4} s  (limit {TOTAL_LIMIT_S} s)")
    lines.append(f"files written ({len(OUTPUT_FILES)} of at most {MAX_OUTPUT_FILES}), rewritten after every stage:")
    lines += [f"  {name:<13} {what}" for name, what in OUTPUT_FILES.items()]
    return "\n".join(lines)
