"""The CUDA backend (csrc/cuda): what is specific to it, namely supports(), how its nvcc-built library is found,
cached, built under a lock and loaded (pna_kernels/cuda.py), its raw entry points and launch limits; that the op's
hot path with check_finite=False reads no tensor data; and both fused GPU backends at a realistic size. Its parity
with the float64 oracle is in test_backends.py (on a GPU) and test_cuda_compile.py (host emulation, and the real
nvcc build of the library).

The loader tests run without a GPU: a stand-in nvcc (a script that logs its calls and copies the host-emulated
build of the kernels, which exports the same launchers, to its -o path) builds into a temporary cache, and the GPU
is faked where the loader asks for one. Everything marked gpu needs a CUDA device and skips without one. Run with
TRITON_INTERPRET=0 (bench/gpu_suite.sh does) so that the Triton tests use compiled kernels.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import pna_kernels
from pna_kernels import cuda as cuda_backend
from pna_kernels.backends import backend_module
from pna_kernels.cuda_emulation import emulated_library
from pna_kernels.cuda_options import DEFAULT, KernelOptions
from pna_kernels.testing import (RTOL, ScanCase, assert_kernels_match_oracle, random_scan_inputs, scan_args,
                                 state_update_inputs)

COMPILED_TRITON = os.environ.get("TRITON_INTERPRET") != "1"
REPO = Path(__file__).resolve().parents[1]


def gpu(test):
    """Mark a test as a GPU test (pytest -m gpu) that skips without a CUDA device."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


# ------------------------------------------------------------------------------------ the loader, without a GPU
FAKE_NVCC = """\
#!{python}
import os, shutil, sys, time
if "--version" in sys.argv:
    print("Cuda compilation tools, stand-in\\nBuild stand-in_1")
    sys.exit(0)
with open(os.environ["FAKE_NVCC_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
time.sleep(float(os.environ.get("FAKE_NVCC_SLEEP", "0")))
out = sys.argv[sys.argv.index("-o") + 1]
if os.environ.get("FAKE_NVCC_FAIL_ON", "-") in sys.argv:
    sys.exit("scan_forward.cu(1): error: this variant does not compile")
if os.environ.get("FAKE_NVCC_GARBAGE"):
    open(out, "w").write("not a library")
else:
    shutil.copy(os.environ["FAKE_NVCC_LIBRARY"], out)
"""


@dataclasses.dataclass
class FakeToolkit:
    """A stand-in nvcc (CUDA_HOME/bin/nvcc) and an empty cache folder (PNA_CUDA_CACHE)."""

    nvcc: str
    cache: Path
    log: Path

    def builds(self) -> list[str]:
        """The nvcc command lines run so far (one per build)."""
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def toolkit(tmp_path, monkeypatch) -> FakeToolkit:
    home = tmp_path / "cuda"
    (home / "bin").mkdir(parents=True)
    nvcc = home / "bin" / "nvcc"
    nvcc.write_text(FAKE_NVCC.format(python=sys.executable))
    nvcc.chmod(0o755)
    kit = FakeToolkit(str(nvcc), tmp_path / "cache", tmp_path / "nvcc.log")
    emulated = emulated_library(DEFAULT).library._name  # built with the real toolkit's headers, before the stand-in
    monkeypatch.setenv("CUDA_HOME", str(home))
    monkeypatch.setenv(cuda_backend.CACHE_ENV, str(kit.cache))
    monkeypatch.setenv("FAKE_NVCC_LOG", str(kit.log))
    monkeypatch.setenv("FAKE_NVCC_LIBRARY", emulated)
    for name in (cuda_backend.ARCH_ENV, "TORCH_CUDA_ARCH_LIST"):
        monkeypatch.delenv(name, raising=False)
    cuda_backend._library.cache_clear()
    yield kit
    cuda_backend._library.cache_clear()


@pytest.fixture
def fake_gpu(monkeypatch):
    """The loader sees one sm_90 GPU (the probe launch, which needs a real one, is skipped)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(cuda_backend, "_probe", lambda library, device: None)


CUDA = torch.device("cuda")


def test_supports_says_why_not(toolkit, monkeypatch):
    assert "CUDA tensors only" in cuda_backend.supports(torch.device("cpu"), torch.float32, 16)
    assert "float64" in cuda_backend.supports(CUDA, torch.float64, 16)
    assert "257" in cuda_backend.supports(CUDA, torch.float32, 257)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA GPU" in cuda_backend.supports(CUDA, torch.float32, 16)


def test_no_nvcc_and_nothing_cached_is_a_sentence(toolkit, fake_gpu, monkeypatch):
    monkeypatch.setattr(cuda_backend, "find_nvcc", lambda: None)
    assert "nvcc was not found" in cuda_backend.supports(CUDA, torch.float32, 16)
    with pytest.raises(RuntimeError, match="nvcc was not found"):
        cuda_backend.library()


def test_the_build_needs_no_cuda_torch(toolkit, fake_gpu, monkeypatch):
    """torch.version.cuda plays no part: a CPU-only torch with a GPU visible (as faked here) builds and loads."""
    monkeypatch.setattr(torch.version, "cuda", None)
    assert cuda_backend.supports(CUDA, torch.bfloat16, 16) is None
    assert cuda_backend.library().options == DEFAULT
    [command] = toolkit.builds()
    assert "-shared" in command and "arch=compute_90,code=sm_90" in command and "bindings" not in command
    assert all(flag in command.split() for flag in DEFAULT.defines())


def test_a_failed_build_is_a_sentence_then_a_runtime_error(toolkit, fake_gpu, tmp_path, monkeypatch):
    failing = tmp_path / "failing-nvcc"
    failing.write_text(f"#!{sys.executable}\nimport sys\nif '--version' in sys.argv: print('stand-in')\n"
                       "else: sys.exit('scan_forward.cu(7): error: no such thing')\n")
    failing.chmod(0o755)
    monkeypatch.setattr(cuda_backend, "find_nvcc", lambda: str(failing))
    reason = cuda_backend.supports(CUDA, torch.float32, 16)
    assert "failed" in reason and "no such thing" in reason
    with pytest.raises(RuntimeError, match="no such thing"):
        cuda_backend.scan_forward(None)


def test_cache_same_inputs_do_not_rebuild_and_a_changed_define_makes_a_new_file(toolkit):
    first = cuda_backend.build(DEFAULT, ("80", "90"))
    mtime = first.stat().st_mtime_ns
    assert cuda_backend.build(DEFAULT, ("80", "90")) == first and first.stat().st_mtime_ns == mtime
    assert len(toolkit.builds()) == 1
    other = cuda_backend.build(KernelOptions(fast_log2=True), ("80", "90"))
    assert other != first and other.parent == first.parent == toolkit.cache
    assert "-DPNA_CUDA_FAST_LOG2=1" in toolkit.builds()[1].split()
    fewer_archs = cuda_backend.build(DEFAULT, ("90",))
    assert len({first, other, fewer_archs}) == 3 and len(toolkit.builds()) == 3
    assert first.stat().st_mtime_ns == mtime
    manifest = json.loads(first.with_suffix(".json").read_text())
    assert manifest["archs"] == ["80", "90"] and manifest["source_key"] == cuda_backend.source_key(DEFAULT)
    assert first.name.startswith(f"{cuda_backend.LIBRARY_PREFIX}-default-sm80_90-")


def test_a_prebuilt_library_is_found_without_nvcc(toolkit, fake_gpu, monkeypatch):
    """A library built elsewhere for sm_80 and sm_90 (another nvcc, no GPU there) and carried here is used as is:
    found by its manifest (sources, -D flags, architectures), with no nvcc on this machine."""
    prebuilt = cuda_backend.build(DEFAULT, cuda_backend.PREBUILT_ARCHS)
    monkeypatch.setattr(cuda_backend, "find_nvcc", lambda: None)
    assert cuda_backend.supports(CUDA, torch.float32, 16) is None
    assert len(toolkit.builds()) == 1
    assert cuda_backend.find_cached(DEFAULT, (9, 0), ("90",)) == prebuilt
    assert cuda_backend.find_cached(DEFAULT, (8, 6), ("86",)) == prebuilt  # sm_80 code runs on 8.6
    assert cuda_backend.find_cached(DEFAULT, (10, 0), ("100",)) is None
    assert cuda_backend.find_cached(KernelOptions(plain=True), (9, 0), ("90",)) is None


def test_a_corrupt_cached_library_is_rebuilt_once(toolkit, fake_gpu):
    path = cuda_backend.build(DEFAULT, ("90",))
    path.write_bytes(b"\0" * 64)  # not a shared library any more
    lib = cuda_backend.library()
    assert len(toolkit.builds()) == 2 and lib.num_dblocks(64, 1, 16) >= 1


def test_a_library_that_never_loads_is_a_sentence(toolkit, fake_gpu, monkeypatch):
    monkeypatch.setenv("FAKE_NVCC_GARBAGE", "1")
    cuda_backend.build(DEFAULT, ("90",))
    reason = cuda_backend.supports(CUDA, torch.float32, 16)
    assert "did not load" in reason and "does not load" in reason, reason
    assert len(toolkit.builds()) == 2  # the cached one, then one rebuild, and no more
    assert "does not load" in cuda_backend.supports(CUDA, torch.float32, 16)  # remembered for the process
    assert len(toolkit.builds()) == 2


def test_a_struct_size_mismatch_is_a_load_error(toolkit, monkeypatch):
    from pna_kernels import cuda_abi

    path = cuda_backend.build(DEFAULT, ("90",))
    monkeypatch.setitem(cuda_abi.C_STRUCTS, "PnaScanSaved",
                        cuda_abi.c_struct("PnaScanSaved", ("extra",), ("checkpoints", "entropy_sums")))
    with pytest.raises(cuda_backend.LOAD_ERRORS, match="PnaScanSaved"):
        cuda_backend.open_library(path, DEFAULT)


def test_target_archs_from_the_environment(monkeypatch, fake_gpu):
    monkeypatch.delenv(cuda_backend.ARCH_ENV, raising=False)
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    assert cuda_backend.target_archs() == ("90",)  # the GPU's own
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    assert cuda_backend.target_archs() == ("80", "90")
    monkeypatch.setenv(cuda_backend.ARCH_ENV, "sm_90a")
    assert cuda_backend.target_archs() == ("90a",)
    monkeypatch.setenv(cuda_backend.ARCH_ENV, "ampere")
    with pytest.raises(ValueError, match=f"^{cuda_backend.ARCH_ENV}:"):
        cuda_backend.target_archs()


@pytest.mark.parametrize("archs,capability,runs", [
    (("80",), (8, 6), True), (("86",), (8, 0), False), (("80", "90"), (9, 0), True), (("90a",), (9, 0), True),
    (("90",), (10, 0), False)], ids=["80-on-86", "86-on-80", "80+90-on-90", "90a-on-90", "90-on-100"])
def test_covers(archs, capability, runs):
    assert cuda_backend.covers(archs, capability) is runs


def test_concurrent_builders_build_once(toolkit, monkeypatch):
    """Two processes asking for the same library at once: one builds (slowly), the other waits on the lock and
    finds it; the file is whole and loads."""
    monkeypatch.setenv("FAKE_NVCC_SLEEP", "2")
    code = textwrap.dedent("""
        import sys
        from pna_kernels import cuda
        from pna_kernels.cuda_options import DEFAULT
        print(cuda.build(DEFAULT, ("80", "90")))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    paths = {out.strip() for out, _ in outputs}
    assert len(paths) == 1 and len(toolkit.builds()) == 1
    lib = cuda_backend.open_library(Path(paths.pop()), DEFAULT)
    assert lib.num_dblocks(64, 1, 16) >= 1
    assert not list(toolkit.cache.glob(".libpna_cuda-*"))  # no build folder left behind


def test_prebuild_command(toolkit):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
    out = toolkit.cache.parent / "prebuilt"
    cmd = [sys.executable, "-m", "pna_kernels.cuda", "build", "--arch", "80,90", "--out", str(out),
           "--set", "chunk=64", "--set", "max_state=64", "--set", "fast_log2=true"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    options = KernelOptions(chunk=64, max_state=64, fast_log2=True)
    assert cuda_backend.find_cached(options, None, ("80", "90"), out) is not None
    bad = subprocess.run(cmd[:-2] + ["--set", "fast_log2=maybe"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "fast_log2" in bad.stderr


def test_device_run_builds_every_variant_at_once_and_names_failures(toolkit, fake_gpu, monkeypatch):
    """bench/device's build stage: variants found in the (carried) cache are loaded, the rest built in parallel; a
    variant that does not compile is a row with nvcc's error, the others are unaffected."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from bench.device.variants import ensure_variants, variant_options

    options = variant_options()
    assert options[0] == DEFAULT and len({o.name() for o in options}) == len(options)
    carried = cuda_backend.build(DEFAULT, cuda_backend.PREBUILT_ARCHS)
    monkeypatch.setenv("FAKE_NVCC_FAIL_ON", "-DPNA_CUDA_FAST_LOG2=1")
    seen = []
    rows = ensure_variants(options, ("90",), toolkit.cache, device=torch.device("cuda", 0), capability=(9, 0),
                           jobs=4, on_result=seen.append)
    status = {r["name"]: r["status"] for r in rows}
    assert [r["name"] for r in rows] == [o.name() for o in options] and len(seen) == len(options)
    assert status["default"] == "found" and rows[0]["file"] == carried.name
    assert status["fast_log2"] == "failed" and "does not compile" in rows[options.index(
        KernelOptions(fast_log2=True))]["error"]
    assert status["chunk64-max_state64-precompute_gates-fast_log2-reuse_decay-parallel_combine"] == "failed"
    assert {s for n, s in status.items() if "fast_log2" not in n and n != "default"} == {"built"}
    assert len(toolkit.builds()) == len(options)  # the carried default, then one try for each other variant


# --------------------------------------------------------------------- no device -> host sync with check_finite=False
@pytest.mark.parametrize("backend", ["torch", "cuda-emulated"])
def test_check_finite_false_never_reads_tensor_data(backend, monkeypatch):
    """The public API's forward, backward and decode step with check_finite=False never bring a value to the host
    (the CPU stand-in for "no device -> host sync"): torch.isfinite, Tensor.cpu / item / tolist / __bool__ raise if
    called, on the validation + dispatch + autograd path. "cuda-emulated" runs the cuda backend's own path
    (cuda.py, cuda_abi.KernelLibrary) on the host-emulated kernels."""
    name = backend
    if backend == "cuda-emulated":
        emulated = emulated_library(DEFAULT)
        monkeypatch.setattr(cuda_backend, "supports", lambda device, dtype, dstate: None)
        monkeypatch.setattr(cuda_backend, "library", lambda options=DEFAULT: emulated)
        name = "cuda"
    x = random_scan_inputs(1, 4, 9, 4, groups=2)
    leaves = {k: v.requires_grad_(True) if isinstance(v, torch.Tensor) else v for k, v in x.items()}
    step = state_update_inputs(random_scan_inputs(1, 4, 1, 4, groups=2, seed=1), 0)

    def refuse(*args, **kwargs):
        raise AssertionError("read tensor data on the host")

    monkeypatch.setattr(torch, "isfinite", refuse)
    for method in ("__bool__", "item", "tolist", "__float__", "__int__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, method, refuse)
    res = pna_kernels.selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend=name,
                                     check_finite=False)
    torch.autograd.backward([t for t in res if t is not None],
                            [torch.ones_like(t) for t in res if t is not None])
    pna_kernels.selective_state_update(**step, backend=name, check_finite=False)
    monkeypatch.undo()
    assert leaves["u"].grad is not None and bool(torch.isfinite(leaves["u"].grad).all())


@gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_check_finite_false_never_syncs_on_gpu(backend):
    """On a GPU, the fused backends' scan (forward and backward) and decode step with check_finite=False run
    without one device -> host synchronisation (torch's sync debug mode turns any into an error)."""
    x = {k: v.cuda().requires_grad_(True) if isinstance(v, torch.Tensor) else v
         for k, v in random_scan_inputs(2, 64, 100, 16).items()}
    step = {k: v.cuda() if isinstance(v, torch.Tensor) else v
            for k, v in state_update_inputs(random_scan_inputs(2, 64, 1, 16, seed=1), 0).items()}
    pna_kernels.selective_scan(**x, backend=backend, check_finite=False)  # built and loaded before the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        res = pna_kernels.selective_scan(**x, delta_softplus=True, backend=backend, check_finite=False,
                                         return_last_state=True)
        sum(t.float().sum() for t in res if t is not None).backward()
        pna_kernels.selective_state_update(**step, backend=backend, check_finite=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ------------------------------------------------------------------------------------------------- on a GPU
@gpu
def test_library_builds_and_loads():
    reason = cuda_backend.supports(torch.device("cuda"), torch.float32, 16)
    assert reason is None, reason
    assert "cuda" in pna_kernels.available_backends("cuda")


@gpu
def test_variants_load_side_by_side():
    plain = cuda_backend.library(KernelOptions(plain=True))
    assert plain is not cuda_backend.library() and plain.options.plain and not cuda_backend.library().options.plain


@gpu
def test_raw_entry_points_name_bad_arguments():
    args = scan_args(ScanCase(1, 4, 5, 4, with_z=False).inputs(device="cuda"), True, cuda_backend.CHUNK_SIZE)
    with pytest.raises(ValueError, match="chunk_size"):
        cuda_backend.scan_forward(dataclasses.replace(args, chunk_size=cuda_backend.CHUNK_SIZE * 2))
    with pytest.raises(ValueError, match="halt_weight: expected dtype"):
        cuda_backend.scan_forward(dataclasses.replace(args, halt_weight=args.halt_weight.double()))
    with pytest.raises(ValueError, match="D: expected a tensor on cuda"):
        cuda_backend.scan_forward(dataclasses.replace(args, D=args.D.cpu()))
    big = scan_args(ScanCase(65536, 1, 1, 1, with_z=False).inputs(device="cuda"), True, cuda_backend.CHUNK_SIZE)
    with pytest.raises(RuntimeError, match="65535"):  # one more than the grid's y dimension holds
        cuda_backend.scan_forward(big)


@gpu
def test_auto_picks_cuda_and_the_library_has_the_limits():
    assert pna_kernels.backends.resolve_backend("auto", torch.device("cuda"), torch.float32, 16) == "cuda"
    assert cuda_backend.library().options.chunk == cuda_backend.CHUNK_SIZE
    assert cuda_backend.library().options.max_state == pna_kernels.validation.MAX_STATE_DIM


# The realistic size the CPU suite cannot run: batch 2, L 2048, D 256, N 16, both fused GPU backends.
REALISTIC = ScanCase(2, 256, 2048, 16, grouped=False)


@gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_realistic_size_matches_oracle(backend, dtype):
    if backend == "triton" and not COMPILED_TRITON:
        pytest.skip("set TRITON_INTERPRET=0 to test the compiled Triton kernels")
    module = backend_module(backend)
    args = scan_args(REALISTIC.inputs(dtype, "cuda"), True, module.CHUNK_SIZE)
    assert_kernels_match_oracle(module.scan_forward, module.scan_backward, args, RTOL[dtype])
