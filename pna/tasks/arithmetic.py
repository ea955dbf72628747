"""Arithmetic chains, the cross-task transfer target.

    <BOS>Input:3+5-2 3+5=8 8-2=6 Result:6<HALT><EOS>

Operands are single digits and every running value stays in 0-9 (each operator and operand is drawn among
those that keep it there), so every step has the same width and 8-operation chains fit in 80 tokens.
"""
from __future__ import annotations

import random


def chain_text(first: int, ops: list[tuple[str, int]]) -> str:
    """Chain example: the expression, one "a+b=c" step per operation, the final value."""
    acc = first
    steps = []
    for op, b in ops:
        new = acc + b if op == "+" else acc - b
        steps.append(f"{acc}{op}{b}={new}")
        acc = new
    expression = str(first) + "".join(f"{op}{b}" for op, b in ops)
    return f"<BOS>Input:{expression} {' '.join(steps)} Result:{acc}<HALT><EOS>"


def sample_chain(rng: random.Random, min_ops: int, max_ops: int) -> tuple[str, dict]:
    """A random chain with min_ops..max_ops operations whose running value stays in 0-9."""
    n_ops = rng.randint(min_ops, max_ops)
    acc = first = rng.randint(0, 9)
    ops = []
    for _ in range(n_ops):
        op, b = rng.choice([(o, d) for o in "+-" for d in range(10) if 0 <= (acc + d if o == "+" else acc - d) <= 9])
        ops.append((op, b))
        acc = acc + b if op == "+" else acc - b
    return chain_text(first, ops), {"kind": "arithmetic_chain", "n_ops": n_ops}
