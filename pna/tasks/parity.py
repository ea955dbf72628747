"""Parity with a running-XOR trace, mixed with two-operand arithmetic in the training and validation splits.

    <BOS>Input:1011 1^0=1 1^1=0 0^1=1 Result:1<HALT><EOS>
    <BOS>Input:37+45 Result:82<HALT><EOS>        ("a+b" / "a-b" with 0 <= a, b <= 99; a-b may be negative)

The longest parity example of n bits has 7n + 1 tokens: 57 for 8 bits and 64 for 9 fit the 64-token budget,
71 for 10 bits does not (the out-of-distribution set needs a longer padding).
"""
from __future__ import annotations

import random
import re

from .partition import draw_input

_BITS = re.compile(r"[01]+")
_TWO_OPERAND = re.compile(r"(\d{1,2})([+-])(\d{1,2})")


def parity_text(bits: str) -> str:
    """Parity example for a bit string: each step XORs the running value with the next bit."""
    if not _BITS.fullmatch(bits):
        raise ValueError(f"bits: expected a non-empty string of 0 and 1, got {bits!r}")
    acc = int(bits[0])
    steps = []
    for bit in bits[1:]:
        new = acc ^ int(bit)
        steps.append(f"{acc}^{bit}={new}")
        acc = new
    trace = " ".join(steps)
    return f"<BOS>Input:{bits} {trace + ' ' if trace else ''}Result:{acc}<HALT><EOS>"


def two_operand_text(expression: str) -> str:
    """Example for "a+b" or "a-b" (0 <= a, b <= 99) with its value, which may be negative."""
    match = _TWO_OPERAND.fullmatch(expression)
    if match is None:
        raise ValueError(f"expression: expected 'a+b' or 'a-b' with a, b in 0-99, got {expression!r}")
    a, op, b = int(match[1]), match[2], int(match[3])
    value = a + b if op == "+" else a - b
    return f"<BOS>Input:{expression} Result:{value}<HALT><EOS>"


def sample_parity(rng: random.Random, split: str, min_bits: int, max_bits: int) -> tuple[str, dict]:
    """A parity example with a uniform bit count in min_bits..max_bits and uniform bits of `split`'s share."""
    n_bits = rng.randint(min_bits, max_bits)
    bits = draw_input("parity", split, 2**n_bits, lambda: "".join(rng.choice("01") for _ in range(n_bits)))
    return parity_text(bits), {"kind": "parity", "n_bits": n_bits}


def sample_two_operand(rng: random.Random, split: str) -> tuple[str, dict]:
    """A uniform "a+b" / "a-b" example (20000 inputs) of `split`'s share."""

    def draw() -> str:
        return f"{rng.randint(0, 99)}{rng.choice('+-')}{rng.randint(0, 99)}"

    expression = draw_input("two_operand", split, 100 * 100 * 2, draw)
    return two_operand_text(expression), {"kind": "two_operand", "op": expression.strip("0123456789")}


def sample_parity_mix(
    rng: random.Random, split: str, min_bits: int, max_bits: int, parity_share: float
) -> tuple[str, dict]:
    """Parity with probability parity_share, else "a+b" / "a-b"."""
    if rng.random() < parity_share:
        return sample_parity(rng, split, min_bits, max_bits)
    return sample_two_operand(rng, split)
