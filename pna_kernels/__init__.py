"""pna_kernels: fused selective scan + per-token state entropy + halt logits, with autograd.

Public API:
    selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, *, halt_weight=None, halt_bias=None, initial_state=None,
                   return_channel_mean=False, backend="auto", check_finite=True)
        -> ScanOutput(out, entropy, halt_logits, last_state, channel_mean)
    selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False) -> out or (out, last_state)      # mamba-ssm's call, drop-in
    selective_state_update(state, x, dt, A, B, C, ...) -> (y, entropy, halt_logits[, channel_mean])   # decode step
    selective_scan_ref(...)        the PyTorch oracle every backend is tested against
    state_entropy(h), normalized_entropy(entropy, num_states)
    available_backends(device)
The backend contract (what a backend's functions take and return, by name) is pna_kernels/contract.py.
"""
from .backends import available_backends
from .ops import ScanOutput, selective_scan, selective_scan_fn, selective_state_update
from .reference import normalized_entropy, selective_scan_ref, selective_state_update_ref, state_entropy

__all__ = [
    "ScanOutput",
    "available_backends",
    "normalized_entropy",
    "selective_scan",
    "selective_scan_fn",
    "selective_scan_ref",
    "selective_state_update",
    "selective_state_update_ref",
    "state_entropy",
]
