"""The job runner of train, transfer, sweep and reproduce: run identity, locks, output folders, workers.

A run's identity is the hash of its whole resolved config (``config_key``), never of where it lives: a run
folder holds RUN_FILE = {"fn", "key", "config"}, and a folder is reused only when the key matches exactly.
Paths inside results are stored relative to the run folder / output root, so a moved or copied output folder,
or a rerun from another working directory, resumes.

    job = Job(fn="pna.sweep:train_and_evaluate", label="a0.05_b0.1_s0", config={...}, options={"device": "cpu"})
    results = run_jobs([job, ...], root / "runs", workers=2)    # list of dicts, in job order
    data = cached_stage(root / "analysis", "ssm_parity", {"inputs": [...]}, compute)   # JSON, keyed by config

* A ``Job`` runs ``fn(config: dict, run_dir: Path, options: dict) -> dict`` (a JSON-able result whose paths
  are relative to run_dir; options: how to run, e.g. the device, not part of the identity) in the folder ``<root>/<label>-<key[:12]>``. Its RESULT_FILE marks it finished; a finished job
  is read back, not rerun, so changed settings give a new folder and old numbers are never reused.
* ``RunLock`` (a flock on LOCK_FILE) allows one writer per run folder: a second one fails at once naming the
  folder; the lock of a dead process is released by the OS and taken over.
* Worker processes (``workers`` > 1) die with their parent (prctl PR_SET_PDEATHSIG on Linux, and a thread
  polling the parent pid everywhere).
* ``check_out_dir`` validates an --out argument before anything runs; ``remove_written`` (pna.atomic) is what
  --force does: delete only the files the tool wrote.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tqdm import tqdm

from pna import atomic

RUN_FILE = "run.json"
RESULT_FILE = "result.json"
LOCK_FILE = ".pna-lock"
KEY_CHARS = 12


class RunLocked(ValueError):
    """Another live process holds a run folder's lock."""


def _canonical(value: Any) -> Any:
    """JSON-stable form: floats that are integers stay floats (1.0 != 1 in a config), tuples become lists."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def config_key(config: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of a config: equal configs, and only those, share a key."""
    text = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """'field old -> new' for every (nested) field that differs, sorted by field name."""
    changes = []
    for name in sorted(set(old) | set(new), key=str):
        a, b = old.get(name, "<unset>"), new.get(name, "<unset>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changes += config_diff(a, b, f"{prefix}{name}.")
        elif _canonical(a) != _canonical(b):
            changes.append(f"{prefix}{name} {a!r} -> {b!r}")
    return changes


def check_identity(run_dir: Path, fn: str, config: Mapping[str, Any], arg: str = "--out") -> bool:
    """Whether run_dir already holds this run (False: a fresh folder); raises ValueError naming the differing
    fields when it holds another run."""
    try:
        held = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        raise ValueError(f"{arg}: {run_dir / RUN_FILE} cannot be read ({exc}); delete it or rerun with --force") from None
    if held.get("fn") == fn and held.get("key") == config_key(config):
        return True
    changes = config_diff(held.get("config", {}), dict(config)) or [f"fn {held.get('fn')!r} -> {fn!r}"]
    raise ValueError(f"{arg}: {run_dir} holds a run with another config ({'; '.join(changes)}); use another "
                     "folder or --force")


def write_identity(run_dir: Path, fn: str, config: Mapping[str, Any]) -> None:
    """Write run_dir's RUN_FILE (fn, key, config)."""
    atomic.write_json(run_dir / RUN_FILE, {"fn": fn, "key": config_key(config), "config": _canonical(config)})


def check_out_dir(path: str | os.PathLike[str], arg: str = "--out") -> Path:
    """An output folder that exists as a folder, or can be made, and can be written; ValueError naming arg
    otherwise. Creates nothing."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise ValueError(f"{arg}: {path} is a broken link")
        probe = probe.parent
    if not probe.is_dir():
        what = "names a file" if probe == path else f"lies under the file {probe}"
        raise ValueError(f"{arg}: {path} {what}; give a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".pna-probe-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ValueError(f"{arg}: cannot write in {probe} ({exc.strerror or exc})") from None
    return path


class RunLock:
    """Exclusive lock of one run folder for the life of a `with` block (fcntl.flock on LOCK_FILE).

    A second writer fails at once with RunLocked naming the folder and the holder's pid. The OS drops the lock
    of a process that dies, so a lock left by a dead process is taken over. Where fcntl is missing (Windows)
    the lock is advisory only by pid.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:
            pass
        except OSError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise RunLocked(f"{self.run_dir}: another process (pid {holder}) is writing this run folder; wait "
                            "for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._fd = fd
        atomic.record(path)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (listed in the manifest)
            self._fd = None


@dataclass(frozen=True)
class Job:
    """One unit of work: fn ("module:function", called as fn(config, run_dir, options) -> dict) on a JSON config.

    label: a readable prefix of the folder name (not part of the identity); the folder is
    ``<label>-<key[:KEY_CHARS]>`` with key = config_key({"fn": fn, "config": config}); options: settings of how
    it runs that do not change its result's meaning (device, quiet), not part of the identity.
    """

    fn: str
    label: str
    config: Mapping[str, Any]
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The identity hash of (fn, config)."""
        return config_key({"fn": self.fn, "config": self.config})

    @property
    def dir_name(self) -> str:
        """Folder name under the jobs root."""
        return f"{self.label}-{self.key[:KEY_CHARS]}"


def _resolve(fn: str) -> Callable[[dict[str, Any], Path, dict[str, Any]], dict[str, Any]]:
    module, _, name = fn.partition(":")
    return getattr(importlib.import_module(module), name)


def jsonl_intact(path: Path) -> bool:
    """Every line of a JSONL file parses and the file ends with a newline (a cut write does not)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        return False
    try:
        for line in data.decode("utf-8").splitlines():
            json.loads(line)
    except ValueError:
        return False
    return True


def finished_result(run_dir: Path, job: Job) -> dict[str, Any] | None:
    """The result of a finished job in run_dir, or None if it is not finished (no result, another key, a
    result or a *.jsonl file that does not parse)."""
    try:
        done = json.loads((run_dir / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(done, dict) or done.get("key") != job.key:
        return None
    if not all(jsonl_intact(p) for p in run_dir.rglob("*.jsonl")):
        return None
    return done["result"]


def execute(job: Job, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Run one job in run_dir under its lock (a finished one is read back); returns its result."""
    run_dir = Path(run_dir)
    with RunLock(run_dir):
        done = finished_result(run_dir, job)
        if done is not None:
            return done
        check_identity(run_dir, job.fn, {"fn": job.fn, "config": job.config}, arg=str(run_dir))
        write_identity(run_dir, job.fn, {"fn": job.fn, "config": job.config})
        result = _resolve(job.fn)(json.loads(json.dumps(job.config)), run_dir, dict(job.options))
        atomic.write_json(run_dir / RESULT_FILE, {"key": job.key, "result": result})
    return result


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            os._exit(1)
        time.sleep(1.0)


def die_with_parent(parent: int) -> None:
    """Make this (worker) process end when its parent does: PR_SET_PDEATHSIG SIGTERM on Linux, and a daemon
    thread polling the parent pid (every platform; it also covers a parent that died before the prctl)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()


def _init_worker(parent: int, threads: int) -> None:
    """Worker set-up: die with the parent; share the CPU cores between the workers."""
    die_with_parent(parent)
    import torch
    torch.set_num_threads(threads)


def run_jobs(jobs: Sequence[Job], root: str | os.PathLike[str], workers: int = 1, desc: str = "jobs",
             base: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Run every job in ``root/<job.dir_name>`` (finished ones are read back), ``workers`` at a time; results
    in job order. workers == 1 runs inline; more uses spawned processes that die with this one. base: the
    output root whose manifests record the job folders (default: root)."""
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers!r}")
    root = Path(root)
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("jobs: two jobs have the same fn and config")
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    todo = []
    for i, job in enumerate(jobs):
        run_dir = root / job.dir_name
        results[i] = finished_result(run_dir, job)
        if results[i] is None:
            atomic.make_dirs(run_dir, base if base is not None else root)
            todo.append(i)
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="run")
    if workers == 1 or len(todo) <= 1:
        for i in todo:
            results[i] = execute(jobs[i], root / jobs[i].dir_name)
            bar.update()
    else:
        import torch.multiprocessing as mp
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                 initargs=(os.getpid(), threads)) as pool:
            futures = {pool.submit(execute, jobs[i], root / jobs[i].dir_name): i for i in todo}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    bar.close()
    return [r for r in results if r is not None]


def cached_stage(folder: str | os.PathLike[str], label: str, config: Mapping[str, Any],
                 compute: Callable[[], Any], base: str | os.PathLike[str] | None = None) -> Any:
    """A stage's JSON output ``folder/<label>-<key>.json`` for this exact config: read back if there, else
    computed and written. Always returns the data as read from the JSON (so a resumed run sees exactly what an
    uninterrupted one saw). base: the output root recording folder in its manifests."""
    folder = Path(folder)
    path = folder / f"{label}-{config_key(config)[:KEY_CHARS]}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))["data"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    data = compute()
    atomic.make_dirs(folder, base if base is not None else folder)
    atomic.write_json(path, {"config": _canonical(config), "data": data}, default=json_default)
    return json.loads(path.read_text(encoding="utf-8"))["data"]


def json_default(value: Any) -> Any:
    """JSON for numpy scalars and arrays and paths (json.dumps default=)."""
    import numpy as np
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
