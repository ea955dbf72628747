"""The fused Triton backend: selective scan + per-token state entropy + halt logits (+ the optional channel mean),
with the module functions of the backend contract (pna_kernels/contract.py).

Runs on CUDA devices, and on the CPU under TRITON_INTERPRET=1 (slow; for tests). State and math are float32
whatever the input dtype.
"""
from __future__ import annotations

import os

import torch

from ..validation import MAX_STATE_DIM
from .scan_backward import scan_backward
from .scan_forward import scan_forward
from .state_update import state_update

# Steps per chunk: the forward saves the state before every chunk and the backward recomputes inside a chunk.
# A power of two (it is a tile length); 16 keeps a (BLOCK_D, N, 16) tile in registers for N up to 256 while the
# checkpoints (batch, L / 16, D, N) stay N / 16 times the size of u.
CHUNK_SIZE = 16
DTYPES = (torch.float16, torch.bfloat16, torch.float32)

__all__ = ["CHUNK_SIZE", "scan_backward", "scan_forward", "state_update", "supports"]


def supports(device: torch.device, dtype: torch.dtype, dstate: int) -> str | None:
    """None if the Triton kernels run inputs of this device, dtype and state size N, else a sentence why not."""
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return "Triton runs on the CPU only under the interpreter (set TRITON_INTERPRET=1 before importing triton)"
    if device.type not in ("cuda", "cpu"):
        return f"Triton kernels run on CUDA devices, not {device.type}"
    if dtype == torch.float64:
        return ("the kernels keep state and sums in float32, so float64 inputs would lose the precision they ask "
                "for; use the 'reference' or 'cpu' backend for float64")
    if dtype not in DTYPES:
        return f"inputs must be float16, bfloat16 or float32, got {dtype}"
    if dstate > MAX_STATE_DIM:
        return f"the state size N = {dstate} exceeds the {MAX_STATE_DIM} a register tile holds"
    return None
