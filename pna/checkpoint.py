"""Checkpoint files: atomic writes and the random-number-generator states a resumed run must restore.

Everything written here is plain Python containers, numbers, strings and tensors, so checkpoints load with
torch.load(..., weights_only=True).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pna import atomic


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """torch.save through pna.atomic: a crash mid-write never leaves a truncated checkpoint."""
    return atomic.torch_save(obj, path)


def load(path: str | Path, arg: str = "path") -> dict[str, Any]:
    """A checkpoint written by save_atomic, on the CPU. ValueError naming arg and the file when it is missing,
    truncated or not a checkpoint (with the way out: delete it, or --force)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{arg}: no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle errors, foreign files: all mean "not a checkpoint"
        reason = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{arg}: {path} is truncated or not a checkpoint ({reason}); delete it or rerun with "
                         "--force") from None
    if not isinstance(state, dict):
        raise ValueError(f"{arg}: {path} is not a checkpoint (holds {type(state).__name__}); delete it or rerun "
                         "with --force")
    return state


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's generators (every CUDA device's too, when there is CUDA)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the generator states saved by rng_state."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
