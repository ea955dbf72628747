"""Lower bounds on the time of one fused-scan call: the memory floor and the special-function (SFU) floor.

Memory floor ("floor bytes"): the fewest bytes any implementation must move through device memory, i.e. every
input of the canonical ScanArgs read once and every output written once, nothing else (no checkpoints, no
partial sums, no re-reads). With batch b, length L, channels D, state size N, B/C groups G, `a` bytes per
activation element (u's dtype) and 4 bytes per float32 parameter/state element:

    inputs  = a * (2 + z) * b*D*L            u, delta (and z)
            + a * 2 * b*G*N*L                B, C
            + 4 * (2*D*N + 2*D + 1)          A, halt_weight; D, delta_bias; halt_bias
            + 4 * b*D*N                      initial_state (canonical form materialises it)
    outputs = a * b*D*L                      out
            + 4 * 2*b*L                      entropy, halt_logits
            + 4 * b*D*N                      last_state
            + 4 * b*L*N                      channel_mean (only when asked for)
    forward  = inputs + outputs
    backward = inputs + outputs + inputs     read the inputs and one cotangent per output, write one gradient
                                             per input (gradients and cotangents have their tensor's dtype)

The HBM floor is those bytes over the copy bandwidth measured in the same run (a device-to-device copy, bytes
read + bytes written over its time).

SFU floor: the recurrence needs exp(dt * A) for every state element at every step, b*L*D*N exponentials per
pass (the backward recomputes the same decays), and an exponential is one MUFU instruction (ex2) at best. The
rate is multiprocessors x MUFU results per clock per multiprocessor x SM clock: 16 results per clock per SM for
compute capability 8.x and 9.0 (CUDA C++ Programming Guide, arithmetic instruction throughput table), 132 SMs
and a 1980 MHz boost clock on the H100/H200 SXM (NVIDIA's datasheet: 67 TFLOP/s fp32 = 132 x 128 lanes x 2 x
1.98 GHz), about 4.18e12 exponentials per second, so 96 us for the realistic shape's 403M state elements. The
entropy's log is a second transcendental per element, but it can be computed on the FMA pipes, so it is left out
of this floor (the floor is a lower bound). The device run reads the SM count and maximum SM clock off the card
when it can.

The binding floor of a row is max(HBM floor, SFU floor); "achieved" is that floor over the measured time.
"""
from __future__ import annotations

from dataclasses import dataclass

STATE_BYTES = 4  # float32 state, parameters and per-token outputs
MUFU_PER_CLOCK_PER_SM = 16
H100_H200_SXM_SMS = 132
H100_H200_SXM_BOOST_HZ = 1.98e9
ELEMENT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ScanFootprint:
    """Sizes of one fused scan call; act_bytes is the element size of u's dtype."""

    batch: int
    length: int
    dim: int
    dstate: int
    act_bytes: int
    groups: int = 1
    has_z: bool = True
    with_channel_mean: bool = False

    def input_bytes(self) -> int:
        b, L, D, N, G = self.batch, self.length, self.dim, self.dstate, self.groups
        activations = self.act_bytes * ((3 if self.has_z else 2) * b * D * L + 2 * b * G * N * L)
        parameters = STATE_BYTES * (2 * D * N + 2 * D + 1 + b * D * N)
        return activations + parameters

    def output_bytes(self) -> int:
        b, L, D, N = self.batch, self.length, self.dim, self.dstate
        mean = b * L * N if self.with_channel_mean else 0
        return self.act_bytes * b * D * L + STATE_BYTES * (2 * b * L + b * D * N + mean)

    def exponentials(self) -> int:
        """exp(dt * A) evaluations of one pass over the sequence: one per state element per step."""
        return self.batch * self.length * self.dim * self.dstate

    def pass_cost(self, pass_name: str) -> tuple[int, int]:
        """(floor bytes, exponentials) of a timed pass: fwd, bwd, or fwd+bwd."""
        fwd = self.input_bytes() + self.output_bytes()
        bwd = 2 * self.input_bytes() + self.output_bytes()
        exps = self.exponentials()
        costs = {"fwd": (fwd, exps), "bwd": (bwd, exps), "fwd+bwd": (fwd + bwd, 2 * exps)}
        if pass_name not in costs:
            raise ValueError(f"pass_name: expected one of {sorted(costs)}, got {pass_name!r}")
        return costs[pass_name]


@dataclass(frozen=True)
class SfuRate:
    """Exponentials per second of the device, and where the figure came from."""

    per_s: float
    source: str


def sfu_rate(sms: int | None = None, clock_hz: float | None = None) -> SfuRate:
    """MUFU rate from the SM count and SM clock; the H100/H200 SXM datasheet figures fill in what is not given."""
    parts = []
    if sms is None:
        sms = H100_H200_SXM_SMS
        parts.append(f"{sms} SMs (H100/H200 SXM datasheet)")
    else:
        parts.append(f"{sms} SMs (device)")
    if clock_hz is None:
        clock_hz = H100_H200_SXM_BOOST_HZ
        parts.append(f"{clock_hz / 1e6:.0f} MHz (H100/H200 SXM boost clock, datasheet)")
    else:
        parts.append(f"{clock_hz / 1e6:.0f} MHz (nvidia-smi clocks.max.sm)")
    parts.append(f"{MUFU_PER_CLOCK_PER_SM} MUFU results/clock/SM (CUDA C++ Programming Guide, cc 8.x/9.0)")
    return SfuRate(per_s=sms * clock_hz * MUFU_PER_CLOCK_PER_SM, source=" x ".join(parts))


@dataclass(frozen=True)
class Floors:
    """The floors of one timed pass, in seconds (hbm_s is None without a measured copy bandwidth)."""

    floor_bytes: int
    exponentials: int
    hbm_s: float | None
    sfu_s: float

    @property
    def floor_s(self) -> float:
        return self.sfu_s if self.hbm_s is None else max(self.hbm_s, self.sfu_s)

    @property
    def bound(self) -> str:
        """Which floor binds: "HBM" or "SFU"."""
        return "HBM" if self.hbm_s is not None and self.hbm_s >= self.sfu_s else "SFU"

    def achieved(self, seconds: float) -> float:
        """Fraction of the binding floor reached by a measured time (1.0 = at the floor)."""
        return self.floor_s / seconds


def pass_floors(footprint: ScanFootprint, pass_name: str, copy_bytes_per_s: float | None, rate: SfuRate) -> Floors:
    """Floors of one pass given the measured copy bandwidth (bytes read + written per second) and the SFU rate."""
    floor_bytes, exps = footprint.pass_cost(pass_name)
    hbm_s = None if not copy_bytes_per_s else floor_bytes / copy_bytes_per_s
    return Floors(floor_bytes=floor_bytes, exponentials=exps, hbm_s=hbm_s, sfu_s=exps / rate.per_s)
