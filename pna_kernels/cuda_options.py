"""Compile-time options of the CUDA kernels (csrc/cuda): one KernelOptions is one build of the shared library.

Every option reaches nvcc (and the host emulation's compiler) as a -D flag (`KernelOptions.defines`), so a build
is fully named by its options and the kernel sources (the library cache keys on both). The defaults compile the
kernels the backend uses; the others exist so that one GPU run can compare them (bench/device) and every one of
them is checked on the CPU against the float64 oracle by host emulation (tests/test_cuda_options_*.py).

    chunk              steps between the forward's state checkpoints, which the backward recomputes from
                       (16, 32 or 64; more than 16 needs max_state <= 64, the backward keeps (chunk + 1) * N floats
                       per channel in shared memory)
    max_state          the largest N the build accepts (<= 256)
    lanes_per_channel  lanes sharing one channel's state row: 0 picks min(max(next_pow2(N), 4), 32); 4, 8, 16 or
                       32 fix it (each lane then holds ceil(N / lanes) entries, at most 8)
    precompute_gates   silu(z) and softplus(delta + bias) computed once per element while a tile is staged, not on
                       every lane of the channel
    fast_log2          the entropy's logarithm by the SFU's log2 (log2 approximation, scaled by ln 2) instead of a
                       precise logf
    reuse_decay        the backward reuses the decay exp(delta * A) it recomputes with the chunk's states instead
                       of exponentiating twice, where the decays fit in shared memory (entries per lane * chunk
                       <= 64, e.g. N <= 32 at chunk 64; elsewhere it exponentiates twice as before)
    parallel_combine   the per-block entropy / halt / channel-mean partial sums are added by a block of 8 warps per
                       32 consecutive tokens (coalesced rows, the channel blocks split among the warps in a fixed
                       order, then a fixed pairwise tree in shared memory) instead of one thread walking every block
    forward_timesteps  the forward's second layout (mamba-ssm's): a thread owns consecutive timesteps of one channel
                       and loops over the state entries and the block's channels; the recurrence over the block's
                       threads is an exclusive scan of the steps' affine maps (warp shuffles, then the warps in
                       order), and y, S1, S2, the halt sum (and the channel-mean sum) of a step stay in the thread
                       that owns it; same channel blocks, outputs and checkpoints as the lane layout, so the backward
                       and the decode step are unchanged
    dbdc_reduction     how the backward reduces dB, dC over a group's channels: "partials" writes one (N, L) slab
                       per channel block and sums them afterwards (today's kernels); "wide_blocks" runs up to 4
                       channel blocks of a group in one CUDA block that adds their dB, dC in shared memory in a
                       fixed order first, so up to 4x fewer slabs (pna_cuda_dbdc_slabs gives their number)
    plain              the baseline that isolates the cost of fusion: the forward computes no entropy, halt or
                       channel mean (no per-step sums, no combine kernels) and writes out, last_state and the
                       checkpoints only (one state per chunk, which the backward recomputes from; so checkpoints are
                       NOT dropped), leaving entropy, halt_logits, entropy_sums and channel_mean unwritten; the
                       backward has no entropy / halt / channel-mean terms and reads neither their cotangents nor
                       the saved entropy sums (the gradients of out and last_state only: halt_weight's is 0); the
                       decode step (state_update) is unchanged
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .validation import MAX_STATE_DIM

CHUNKS = (16, 32, 64)
LANES = (0, 4, 8, 16, 32)
DBDC_REDUCTIONS = ("partials", "wide_blocks")
# The largest N a build with a chunk above 16 accepts (the backward's chunk of states lives in shared memory).
LONG_CHUNK_MAX_STATE = 64


@dataclass(frozen=True)
class KernelOptions:
    """One build of the CUDA kernels (see the module docstring for each field); the defaults are the backend's."""

    chunk: int = 16
    max_state: int = MAX_STATE_DIM
    lanes_per_channel: int = 0
    precompute_gates: bool = False
    fast_log2: bool = False
    reuse_decay: bool = False
    parallel_combine: bool = False
    dbdc_reduction: str = "partials"
    plain: bool = False
    forward_timesteps: bool = False

    def __post_init__(self) -> None:
        if self.chunk not in CHUNKS:
            raise ValueError(f"chunk: expected one of {CHUNKS}, got {self.chunk!r}")
        limit = MAX_STATE_DIM if self.chunk == 16 else LONG_CHUNK_MAX_STATE
        if not (isinstance(self.max_state, int) and 1 <= self.max_state <= limit):
            raise ValueError(f"max_state: expected an integer in [1, {limit}] with chunk {self.chunk}, "
                             f"got {self.max_state!r}")
        if self.lanes_per_channel not in LANES:
            raise ValueError(f"lanes_per_channel: expected one of {LANES} (0: automatic), "
                             f"got {self.lanes_per_channel!r}")
        if self.lanes_per_channel and self.max_state > 8 * self.lanes_per_channel:
            raise ValueError(f"lanes_per_channel: {self.lanes_per_channel} lanes hold at most "
                             f"{8 * self.lanes_per_channel} state entries, but max_state is {self.max_state}")
        if self.dbdc_reduction not in DBDC_REDUCTIONS:
            raise ValueError(f"dbdc_reduction: expected one of {DBDC_REDUCTIONS}, got {self.dbdc_reduction!r}")
        for name in ("precompute_gates", "fast_log2", "reuse_decay", "parallel_combine", "plain", "forward_timesteps"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected a bool, got {getattr(self, name)!r}")

    def defines(self) -> tuple[str, ...]:
        """The -D flags of this build, in field order (every field, defaults included)."""
        values = {**asdict(self), "dbdc_reduction": DBDC_REDUCTIONS.index(self.dbdc_reduction)}
        names = {"chunk": "PNA_CUDA_CHUNK", "max_state": "PNA_CUDA_MAX_STATE"}
        return tuple(f"-D{names.get(f.name, 'PNA_CUDA_' + f.name.upper())}={int(values[f.name])}"
                     for f in fields(self))

    def name(self) -> str:
        """A short readable name: 'default', or the fields that differ from the defaults, e.g. 'chunk64-fast_log2'."""
        changed = [f for f in fields(self) if getattr(self, f.name) != f.default]
        if not changed:
            return "default"
        return "-".join(f.name if isinstance(getattr(self, f.name), bool) else f"{f.name}{getattr(self, f.name)}"
                        for f in changed)


DEFAULT = KernelOptions()
