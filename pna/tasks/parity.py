"""Parity with a running-XOR trace, mixed with two-operand arithmetic in the training split.

    <BOS>Input:1011 1^0=1 1^1=0 0^1=1 Result:1<HALT><EOS>
    <BOS>Input:37+45 Result:82<HALT><EOS>        (the 30% "a+b" / "a-b" share of the training mix, 0 <= a, b <= 99)
"""
from __future__ import annotations

import random


def parity_text(bits: str) -> str:
    """Parity example for a bit string: each step XORs the running value with the next bit."""
    acc = int(bits[0])
    steps = []
    for bit in bits[1:]:
        new = acc ^ int(bit)
        steps.append(f"{acc}^{bit}={new}")
        acc = new
    trace = " ".join(steps)
    return f"<BOS>Input:{bits} {trace + ' ' if trace else ''}Result:{acc}<HALT><EOS>"


def two_operand_text(a: int, op: str, b: int) -> str:
    """"a+b" or "a-b" with its value (which may be negative)."""
    value = a + b if op == "+" else a - b
    return f"<BOS>Input:{a}{op}{b} Result:{value}<HALT><EOS>"


def sample_parity(rng: random.Random, min_bits: int, max_bits: int) -> tuple[str, dict]:
    """A random parity example with min_bits..max_bits bits."""
    n_bits = rng.randint(min_bits, max_bits)
    bits = "".join(rng.choice("01") for _ in range(n_bits))
    return parity_text(bits), {"kind": "parity", "n_bits": n_bits}


def sample_parity_mix(rng: random.Random, min_bits: int, max_bits: int, parity_share: float) -> tuple[str, dict]:
    """The training mix: parity with probability parity_share, else "a+b" / "a-b"."""
    if rng.random() < parity_share:
        return sample_parity(rng, min_bits, max_bits)
    a, b, op = rng.randint(0, 99), rng.randint(0, 99), rng.choice("+-")
    return two_operand_text(a, op, b), {"kind": "arithmetic", "op": op}
