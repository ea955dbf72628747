"""One parity suite for every backend: forward, every gradient (the channel mean's included), the decode step,
decode loop == scan, NaN entropy of a non-finite state, determinism and opcheck, against the float64 oracle.

Each test is parametrised over the backends (ids: reference, torch, cpu, triton, cuda); a backend that cannot
run here (no compiler, no GPU, a dtype it does not support) is skipped with its own reason. Triton runs on the
CPU under the interpreter (tests/conftest.py), so its sizes stay small (L * D * N <= ~8k).
The first half goes through the public ops (pna_kernels.selective_scan / selective_state_update, autograd and
torch.library included); the second calls each backend's module functions through the contract
(pna_kernels/contract.py) with chunks of SMALL_CHUNK steps and, for Triton, small tiles, so that short sequences
span several chunks and a group's channels several blocks (edge sizes N = 1, 5, 16, 64, 256, grouped and
ungrouped B/C, every dtype tier, outputs NaN-poisoned before the kernels write them). The GPU_CASES are sized for
the GPU kernels' layout and run where the backend's device is a GPU.
Backend-specific checks (builds, supports(), host emulation, compile checks) stay in the backends' own files.
"""
from __future__ import annotations

import math

import pytest
import torch

import pna_kernels.triton.common as triton_common
from pna_kernels import selective_state_update
from pna_kernels.backends import backend_module, chunk_size, unsupported_reason
from pna_kernels.contract import (
    COTANGENT_OF, ScanArgs, ScanCotangents, ScanResult, flatten, replace, tensor_fields, unflatten,
)
from pna_kernels.testing import (
    RTOL, ScanCase, assert_bitwise_equal, assert_close_rel, assert_decode_loop_matches_scan,
    assert_kernel_decode_loop_matches_scan, assert_kernel_step_matches_oracle, assert_kernels_match_oracle,
    assert_matches_oracle, assert_non_finite_state_gives_nan_entropy, assert_state_update_matches_oracle, cotangents,
    decode_inputs, kernel_oracle, run_kernels, run_scan, scan_args, scan_cotangents,
    scan_with_grads, state_update_args,
)

GPU = torch.cuda.is_available()
# (backend, device): the GPU backends on the GPU when there is one; Triton otherwise under the interpreter.
BACKENDS = [
    pytest.param(("reference", "cpu"), id="reference"),
    pytest.param(("torch", "cpu"), id="torch"),
    pytest.param(("cpu", "cpu"), id="cpu"),
    pytest.param(("triton", "cuda" if GPU else "cpu"), id="triton"),
    pytest.param(("cuda", "cuda"), id="cuda"),
]


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def usable(backend: tuple[str, str], dtype: torch.dtype = torch.float32, dstate: int = 4) -> tuple[str, str]:
    """The backend and device, or a skip saying why this backend cannot run these inputs here."""
    name, device = backend
    if device == "cuda" and not GPU:
        pytest.skip("needs a CUDA device")
    reason = unsupported_reason(name, torch.device(device), dtype, dstate)
    if reason is not None:
        pytest.skip(f"{name} cannot run {dtype_id(dtype)} here: {reason}")
    return name, device


SHAPES = {
    "one_step": ScanCase(1, 3, 1, 2, grouped=False),
    "grouped_no_init": ScanCase(2, 6, 19, 4, 2, with_init=False),
    "ungrouped_no_softplus": ScanCase(2, 4, 37, 8, grouped=False, with_z=False, softplus=False),
    "partial_chunks": ScanCase(1, 4, 70, 4, 4),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("case", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_and_gradients_match_oracle(backend, case, dtype):
    """out, entropy, halt_logits, last_state, channel_mean and the gradient of every input."""
    name, device = usable(backend, dtype, case.dstate)
    x = case.inputs(dtype, device, seed=case.length)
    assert_matches_oracle(x, name, case.softplus, RTOL[dtype], with_channel_mean=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_channel_mean_matches_oracle(backend):
    """The default call (no channel mean asked): the four outputs and every gradient."""
    name, device = usable(backend)
    x = ScanCase(2, 6, 19, 4, 2).inputs(torch.float32, device, seed=20)
    assert_matches_oracle(x, name, True, RTOL[torch.float32])
    assert run_scan(x, name).channel_mean is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_channel_mean_is_the_mean_of_the_states_over_channels(backend):
    """Only the channel mean carries a cotangent: its gradient alone matches the oracle's."""
    name, device = usable(backend)
    x = ScanCase(2, 4, 21, 4, 2).inputs(torch.float32, device, seed=23)
    batch, dim, length = x["u"].shape
    cot = cotangents(batch, dim, length, 4, device, with_channel_mean=True)
    only_mean = tuple(torch.zeros_like(c) for c in cot[:-1]) + cot[-1:]
    got_out, got_grad = scan_with_grads(x, name, True, only_mean)
    want_out, want_grad = scan_with_grads({k: None if v is None else v.double() for k, v in x.items()},
                                          "reference", True, only_mean)
    torch.testing.assert_close(got_out["channel_mean"], want_out["channel_mean"].float(), rtol=1e-4, atol=1e-5)
    for key, want in want_grad.items():
        torch.testing.assert_close(got_grad[key].double(), want, rtol=1e-3, atol=1e-5, msg=f"d{key}")


@pytest.mark.parametrize("softplus", [True, False], ids=["softplus", "no_softplus"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=dtype_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_state_update_matches_oracle(backend, dtype, softplus):
    name, device = usable(backend, dtype)
    x = ScanCase(2, 6, 3, 4, 3, softplus=softplus).inputs(dtype, device, seed=6)
    assert_state_update_matches_oracle(x, 1, name, softplus, RTOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_loop_matches_scan(backend):
    name, device = usable(backend)
    x = ScanCase(2, 4, 23, 4, 2).inputs(torch.float32, device, seed=27)
    assert_decode_loop_matches_scan(x, name, RTOL[torch.float32])


@pytest.mark.parametrize("bad", ["inf", "nan", "overflow"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_state_gives_nan_entropy(backend, bad):
    """Once the state holds Inf or NaN (or its energy sum overflows) the entropy is NaN, never a finite number;
    before that it is finite. The decode step likewise."""
    name, device = usable(backend)
    x = ScanCase(1, 4, 12, 4, with_z=False, with_init=False).inputs(torch.float32, device, seed=17)
    t_bad = 5
    x["u"][:, 1, t_bad] = {"inf": float("inf"), "nan": float("nan"), "overflow": 3e38}[bad]
    x["A"] = torch.full_like(x["A"], -1e-3)  # slow decay: the bad value stays in the state
    entropy = run_scan(x, name, check_finite=False).entropy
    assert torch.isfinite(entropy[:, :t_bad]).all()
    assert torch.isnan(entropy[:, t_bad]).all(), entropy
    state = x["initial_state"] if x["initial_state"] is not None else torch.zeros(1, 4, 4, device=device)
    state = torch.full_like(state, {"inf": float("inf"), "nan": float("nan"), "overflow": 3e30}[bad])
    step = decode_inputs(x, 0)
    _, step_entropy, _ = selective_state_update(state, step["x"], step["dt"], x["A"], step["B"], step["C"],
                                                backend=name, check_finite=False)
    assert torch.isnan(step_entropy).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_state_has_zero_entropy_and_finite_gradients(backend):
    """h_t = 0 (no input, no initial state) across a chunk boundary: entropy exactly 0, every gradient finite."""
    name, device = usable(backend)
    x = ScanCase(2, 4, 40, 4, 2, with_init=False).inputs(torch.float32, device, seed=46)
    x["u"][:, :, :20] = 0.0
    res = run_scan(x, name, return_channel_mean=True)
    assert torch.equal(res.entropy[:, :20], torch.zeros_like(res.entropy[:, :20]))
    assert torch.equal(res.channel_mean[:, :20], torch.zeros_like(res.channel_mean[:, :20]))
    cot = cotangents(2, 4, 40, 4, device, with_channel_mean=True)
    _, grads = scan_with_grads(x, name, True, cot)
    for key, g in grads.items():
        assert torch.isfinite(g).all(), key


@pytest.mark.parametrize("backend", BACKENDS)
def test_repeat_runs_are_bitwise_equal(backend):
    """Deterministic: the same inputs give the same bits, forward and backward (no float atomics)."""
    name, device = usable(backend)
    x = ScanCase(2, 8, 40, 4, 2).inputs(torch.float32, device, seed=47)
    cot = cotangents(2, 8, 40, 4, device, with_channel_mean=True)
    first_out, first_grad = scan_with_grads(x, name, True, cot)
    second_out, second_grad = scan_with_grads(x, name, True, cot)
    for key in first_out:
        assert torch.equal(first_out[key], second_out[key]), key
    for key in first_grad:
        assert torch.equal(first_grad[key], second_grad[key]), f"d{key}"


@pytest.mark.parametrize("with_channel_mean", [True, False], ids=["channel_mean", "no_channel_mean"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend, with_channel_mean):
    """torch.library.opcheck of the forward, backward and decode-step ops on this backend."""
    name, device = usable(backend)
    x = ScanCase(2, 4, 6, 4, 2).inputs(torch.float32, device, seed=14)
    args = scan_args(x, True, chunk_size(name), with_channel_mean)
    grad_args = replace(args, **{k: getattr(args, k).detach().requires_grad_(True) for k in ("u", "A", "B")})
    torch.library.opcheck(torch.ops.pna.selective_scan_fwd, (*flatten(grad_args), name))
    res = unflatten(ScanResult, torch.ops.pna.selective_scan_fwd(*flatten(args), name))
    gen = torch.Generator().manual_seed(9)
    cot = ScanCotangents(**{c: torch.randn(getattr(res, o).shape, generator=gen).to(device, getattr(res, o).dtype)
                            for o, c in COTANGENT_OF.items()})
    torch.library.opcheck(torch.ops.pna.selective_scan_bwd, (*flatten(args), *flatten(res.saved), *flatten(cot), name))
    torch.library.opcheck(torch.ops.pna.selective_state_update, (*flatten(state_update_args(x, 0, True)), name))


# ---------------------------------------------------------------------------------------------------------------
# The backends' module functions through the contract.

SMALL_CHUNK = 8  # steps per chunk for every backend that takes a chunk size (the CUDA kernels' is fixed)


@pytest.fixture
def small_triton_tiles(monkeypatch):
    """Triton tiles of 2 * 4 * SMALL_CHUNK elements (BLOCK_D 2 for N = 4, 1 for N >= 16) and decode tiles of 8, so
    a group's channels span several D-blocks, the last one partly masked; other backends ignore them. (The public
    tests above keep the default tiles.)"""
    monkeypatch.setattr(triton_common, "SCAN_TILE_ELEMENTS", 2 * 4 * SMALL_CHUNK)
    monkeypatch.setattr(triton_common, "STATE_TILE_ELEMENTS", 2 * 4)


def kernels(backend: tuple[str, str], dtype: torch.dtype = torch.float32, dstate: int = 4):
    """(module, device, chunk size) of a backend that can run these inputs here, else a skip saying why."""
    name, device = usable(backend, dtype, dstate)
    module = backend_module(name)
    return module, device, module.CHUNK_SIZE if name == "cuda" else SMALL_CHUNK


def check_kernels(module, args, dtype):
    return assert_kernels_match_oracle(module.scan_forward, module.scan_backward, args, RTOL[dtype])


KERNEL_CASES = {  # every L * D * N <= ~8k (Triton's interpreter); L spans 1-3 chunks of SMALL_CHUNK
    "N4-2groups-halfmasked": ScanCase(2, 6, 19, 4, 2),
    "N16-no-softplus": ScanCase(1, 5, 13, 16, with_init=False, softplus=False),
    "N16-2groups-no-mean": ScanCase(2, 4, 21, 16, 2, with_init=False, softplus=False, with_channel_mean=False),
    "ungrouped-no-gate": ScanCase(1, 3, 17, 4, grouped=False, with_z=False),
    "N5-padded": ScanCase(2, 4, 11, 5, 2),
    "N256": ScanCase(1, 2, 5, 256, 2, softplus=False),
    "N1-ungrouped": ScanCase(1, 7, 20, 1, grouped=False),
    "into-third-chunk-no-mean": ScanCase(1, 7, 17, 4, with_z=False, with_init=False, with_channel_mean=False),
    "single-step": ScanCase(1, 5, 1, 4, with_init=False),
    # Channel counts for the native kernels' blocks (16 channels per block on the CPU) and three groups; under the
    # interpreter Triton skips these (its small tiles above already split groups into several blocks).
    "N64-3groups": ScanCase(1, 9, 13, 64, 3),
    "37ch": ScanCase(1, 37, 13, 4),
    "17-per-group-no-softplus": ScanCase(2, 34, 17, 4, 2, with_z=False, softplus=False),
    "3-per-group-no-init": ScanCase(3, 6, 20, 16, 2, with_init=False),
}
NATIVE_BLOCK_CASES = ("N64-3groups", "37ch", "17-per-group-no-softplus", "3-per-group-no-init")


@pytest.mark.usefixtures("small_triton_tiles")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=dtype_id)
@pytest.mark.parametrize("case_id", KERNEL_CASES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_kernels_match_oracle(backend, case_id, dtype):
    case = KERNEL_CASES[case_id]
    module, device, chunk = kernels(backend, dtype, case.dstate)
    if backend[0] == "triton" and device == "cpu" and case_id in NATIVE_BLOCK_CASES:
        pytest.skip("sized for the native kernels' channel blocks; Triton's small tiles split groups above")
    args = scan_args(case.inputs(dtype, device), case.softplus, chunk, case.with_channel_mean)
    check_kernels(module, args, dtype)


@pytest.mark.usefixtures("small_triton_tiles")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=dtype_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision_kernels_match_oracle(backend, dtype):
    """bf16/fp16 activations, upcast inside: within their tier of the float64 oracle."""
    module, device, chunk = kernels(backend, dtype)
    check_kernels(module, scan_args(ScanCase(2, 6, 19, 4, 2).inputs(dtype, device), True, chunk), dtype)


@pytest.mark.usefixtures("small_triton_tiles")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=dtype_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_kernels_zero_states(backend, dtype):
    """All-zero states (S1 = 0, entropy exactly 0) for the first steps across chunk boundaries, and a state entry
    that stays exactly zero throughout (0 log 0 = 0 in S2 and in the entropy gradient)."""
    module, device, chunk = kernels(backend, dtype)
    case, zero_steps = (ScanCase(2, 12, 40, 16, 2, with_init=False), 20) if device == "cuda" else \
        (ScanCase(2, 5, 21, 4, with_init=False), 18)
    args = scan_args(case.inputs(dtype, device), True, chunk)
    args.u[..., :zero_steps] = 0
    args.B[:, :, 0] = 0
    result = check_kernels(module, args, dtype)
    assert torch.equal(result.entropy[:, :zero_steps], torch.zeros_like(result.entropy[:, :zero_steps]))


@pytest.mark.usefixtures("small_triton_tiles")
@pytest.mark.parametrize("backend", BACKENDS)
def test_kernels_checkpoints_and_chunk_size(backend):
    """Checkpoints are the oracle's states before every chunk, and the gradients do not depend on the chunk."""
    name = backend[0]
    if name == "cuda":
        pytest.skip("the CUDA kernels' chunk size is fixed at build time")
    dtype = torch.float32 if name == "triton" else torch.float64
    module, device, _ = kernels(backend, dtype)
    x = ScanCase(2, 5, 23, 4).inputs(dtype, device)
    args4, args8 = scan_args(x, True, 4), scan_args(x, True, 8)
    cot = scan_cotangents(args4)
    got4, grads4 = run_kernels(module.scan_forward, module.scan_backward, args4, cot)
    assert_close_rel("checkpoints", got4.checkpoints, kernel_oracle(args4, cot)[0].checkpoints, RTOL[dtype])
    _, grads8 = run_kernels(module.scan_forward, module.scan_backward, args8, cot)
    for field in tensor_fields(ScanArgs):
        assert_close_rel(f"d{field}", getattr(grads4, field), getattr(grads8, field), RTOL[dtype])


def nan_filled(real_alloc):
    """An allocation function whose floating tensors come NaN-filled, so any element a kernel leaves unwritten
    shows up in the comparison."""
    def alloc(*args, **kwargs):
        t = real_alloc(*args, **kwargs)
        return t.fill_(math.nan) if t.is_floating_point() else t
    return alloc


def poison_cuda_cache() -> None:
    """Leave NaN-filled blocks in torch's CUDA caching allocator, so that outputs the kernels allocate (in the C++
    binding, out of reach of a torch.empty patch) hold NaN wherever a kernel fails to write."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    large = torch.full((64 * 2**20,), math.nan, device="cuda")  # 256 MiB: one segment that large requests split
    small = [torch.full((2**17,), math.nan, device="cuda") for _ in range(64)]  # 512 KiB blocks of the small pool
    del large, small
    assert torch.isnan(torch.empty(1000, device="cuda")).all()
    assert torch.isnan(torch.empty(4 * 2**20, device="cuda")).all()


def poisoning(backend: tuple[str, str], monkeypatch):
    """A function to call before each kernel call that makes the backend's fresh output buffers NaN."""
    name, device = backend
    if name == "triton":
        monkeypatch.setattr(torch, "empty", nan_filled(torch.empty))
        assert torch.isnan(torch.empty(3, device=device)).all()
        return lambda: None
    if name == "cuda":
        return poison_cuda_cache
    pytest.skip(f"{name}: its outputs are not buffers allocated by the Python side or the CUDA cache")


@pytest.mark.usefixtures("small_triton_tiles")
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_output_element_is_written(backend, monkeypatch):
    """Outputs, gradients and the decode step's outputs allocated NaN-filled: the kernels overwrite every element."""
    module, device, chunk = kernels(backend, dstate=16)
    poison = poisoning(backend, monkeypatch)
    case = ScanCase(2, 12, 37, 16, 2) if device == "cuda" else ScanCase(2, 6, 19, 4, 2)

    def forward(a):
        poison()
        return module.scan_forward(a)

    def backward(a, saved, cot):
        poison()
        return module.scan_backward(a, saved, cot)

    def step(a):
        poison()
        return module.state_update(a)

    x = case.inputs(torch.float32, device)
    assert_kernels_match_oracle(forward, backward, scan_args(x, True, chunk), RTOL[torch.float32])
    assert_kernel_step_matches_oracle(step, state_update_args(x, 0, True), RTOL[torch.float32])


STEP_CASES = {
    "N16-gate": ScanCase(3, 10, 2, 16),
    "N16-2groups-gate": ScanCase(3, 10, 2, 16, 2),
    "N16-2groups-no-gate-no-softplus": ScanCase(3, 10, 2, 16, 2, with_z=False, softplus=False),
    "N16-no-gate-no-softplus": ScanCase(2, 12, 2, 16, with_z=False, softplus=False),
    "N4-2groups": ScanCase(2, 6, 2, 4, 2),
    "N256-2groups": ScanCase(2, 12, 2, 256, 2),
}


@pytest.mark.usefixtures("small_triton_tiles")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=dtype_id)
@pytest.mark.parametrize("case", STEP_CASES.values(), ids=STEP_CASES.keys())
@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_step_matches_oracle(backend, case, dtype):
    module, device, _ = kernels(backend, dtype, case.dstate)
    assert_kernel_step_matches_oracle(module.state_update, state_update_args(case.inputs(dtype, device), 1,
                                                                              case.softplus), RTOL[dtype])


@pytest.mark.usefixtures("small_triton_tiles")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_decode_loop_matches_scan(backend, dtype):
    module, device, chunk = kernels(backend, dtype, 16)
    case = ScanCase(2, 12, 19, 16, 2) if device == "cuda" else ScanCase(2, 6, 11, 4, 2)
    assert_kernel_decode_loop_matches_scan(module.scan_forward, module.state_update, case.inputs(dtype, device),
                                           chunk, RTOL[dtype])


@pytest.mark.usefixtures("small_triton_tiles")
@pytest.mark.parametrize("value", [float("nan"), 1e30], ids=["nan", "overflow"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_non_finite_state_gives_nan_entropy(backend, value):
    """A NaN state, or one whose energy h^2 overflows float32, gives NaN entropy (never 0 or another number), in
    the scan and in the decode step; the other batch row is unaffected."""
    module, device, chunk = kernels(backend, dstate=16)
    case = ScanCase(2, 12, 3, 16) if device == "cuda" else ScanCase(2, 4, 3, 4)
    assert_non_finite_state_gives_nan_entropy(module.scan_forward, module.state_update, case.inputs(device=device),
                                              chunk, value)


@pytest.mark.usefixtures("small_triton_tiles")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_kernels_bitwise_for_any_thread_count(backend, dtype):
    """Two runs, and a run on one CPU thread, give bitwise-equal outputs and gradients (no float atomics, no
    thread-count-dependent sums; D = 24 spans several of the cpu kernels' channel blocks). On a GPU: a size
    spanning several blocks and chunks, bf16 too."""
    module, device, chunk = kernels(backend, dtype, 16)
    if dtype != torch.float32 and device != "cuda":
        pytest.skip("the CPU backends sum in float32 whatever the input dtype: float32 covers them")
    case = {"cuda": ScanCase(2, 48, 150, 16, 2), "triton": ScanCase(2, 6, 11, 4, 2)}.get(
        "cuda" if device == "cuda" else backend[0], ScanCase(2, 24, 20, 16, 2))  # Triton on the CPU: interpreted
    args = scan_args(case.inputs(dtype, device), True, chunk)
    cot = scan_cotangents(args)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first, second = (run_kernels(module.scan_forward, module.scan_backward, args, cot) for _ in range(2))
        torch.set_num_threads(1)
        single = run_kernels(module.scan_forward, module.scan_backward, args, cot)
    finally:
        torch.set_num_threads(threads)
    assert_bitwise_equal(second, first)
    assert_bitwise_equal(single, first)


GPU_CASES = {  # sized for the CUDA kernels' blocks (32 channels for N = 4, 8 for N = 16, 4 for N >= 32)
    "N4-40ch-ungrouped": ScanCase(2, 40, 37, 4, grouped=False),
    "N16-150steps-no-softplus": ScanCase(2, 12, 150, 16, 2, with_init=False, softplus=False),
    "N16-under-a-chunk-no-mean": ScanCase(1, 6, 5, 16, with_z=False, with_channel_mean=False),
    "N64": ScanCase(2, 6, 37, 64, 2, with_z=False, with_init=False),
    "N256": ScanCase(1, 6, 21, 256, 2, softplus=False),
    "N16-ungrouped-no-softplus": ScanCase(3, 24, 70, 16, grouped=False, with_z=False, softplus=False),
    "N16-53steps": ScanCase(2, 12, 53, 16, 2),
    "N64-53steps": ScanCase(2, 12, 53, 64, 2),
}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=dtype_id)
@pytest.mark.parametrize("case", GPU_CASES.values(), ids=GPU_CASES.keys())
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_sizes_match_oracle(backend, case, dtype):
    """The backends' default tiles at sizes that fill several of the GPU kernels' blocks and chunks."""
    if backend[1] != "cuda":
        pytest.skip("a GPU-sized case: runs where the backend's device is a GPU")
    module, device, chunk = kernels(backend, dtype, case.dstate)
    check_kernels(module, scan_args(case.inputs(dtype, device), case.softplus, chunk, case.with_channel_mean), dtype)
