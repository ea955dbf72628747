"""Arithmetic chains, the cross-task transfer target.

    <BOS>Input:3+5-2 3+5=8 8-2=6 Result:6<HALT><EOS>

Operands are single digits and every running value stays in 0-9: after the first digit, each step's (operator,
operand) is drawn uniformly among the 11 pairs that keep the value in 0-9, so a chain of n operations is one of
10 * 11**n equally likely inputs. Every step "a+b=c" then has the five-character shape of a parity step "a^b=c",
and a chain of n operations has 8n + 8 tokens: 56 for 6 (training), 72 for 8 (test).
"""
from __future__ import annotations

import random
import re

from .partition import draw_input

_EXPRESSION = re.compile(r"\d([+-]\d)+")


def chain_text(expression: str) -> str:
    """Chain example for an expression of single digits such as "3+5-2": one "a+b=c" step per operation."""
    if not _EXPRESSION.fullmatch(expression):
        raise ValueError(f"expression: expected single digits joined by + or -, such as '3+5-2', got {expression!r}")
    acc = int(expression[0])
    steps = []
    for op, digit in zip(expression[1::2], expression[2::2]):
        new = acc + int(digit) if op == "+" else acc - int(digit)
        steps.append(f"{acc}{op}{digit}={new}")
        acc = new
    return f"<BOS>Input:{expression} {' '.join(steps)} Result:{acc}<HALT><EOS>"


def _draw_chain(rng: random.Random, n_ops: int) -> str:
    acc = rng.randint(0, 9)
    parts = [str(acc)]
    for _ in range(n_ops):
        op, d = rng.choice([("+", d) for d in range(10 - acc)] + [("-", d) for d in range(acc + 1)])
        acc = acc + d if op == "+" else acc - d
        parts.append(f"{op}{d}")
    return "".join(parts)


def sample_chain(rng: random.Random, split: str, min_ops: int, max_ops: int) -> tuple[str, dict]:
    """A chain with a uniform operation count in min_ops..max_ops whose running value stays in 0-9, of `split`'s
    share."""
    n_ops = rng.randint(min_ops, max_ops)
    expression = draw_input("arithmetic", split, 10 * 11**n_ops, lambda: _draw_chain(rng, n_ops))
    return chain_text(expression), {"kind": "arithmetic", "n_ops": n_ops}
