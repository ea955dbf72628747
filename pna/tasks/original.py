"""The original work's data generators, draw for draw (the faithful protocol's data).

make_split(..., protocol="faithful") calls these. Each replays the random draws of the original code in the same
order from the same seed (42 / 123 / 456), so split s of size n is the original's split s, example for example
(a known-answer test checks the original's count of its filtered test set, n = 791):

* parity mix (the original's src/dataset.py): in EVERY split, including test, a mixing generator
  random.Random(seed) picks two-operand arithmetic with probability 0.3, else a bit count in 2..8; a second
  generator seeded the same way (the original reseeds Python's global generator) draws the content. Arithmetic
  carries its worked step: "Input:37+45 37+45=82 Result:82".
* arithmetic chains (src/cross_task_transfer.py): numpy RandomState(seed); n_ops uniform in min_ops..max_ops,
  a start value 1-9, each step an operator +/- and an operand 1-9, the running value clamped to 0..99 (so values
  have up to two digits). Long chains exceed the 64-token budget: the faithful loader truncates them as the
  original did (about a quarter of the 2-8-operation test split; see pna.tasks.dataset).
* free-generation inputs (src/generate.py generate_test_inputs): random.Random(2024) draws 400 bit strings of
  2-8 bits, then 100 out-of-distribution ones of 9 or 10 bits (original_generation_examples).
* sorting (src/phase19_cross_domain.py): one random.Random(seed) draws the letter count in min..max letters and
  the letters A-F; input letters are space separated ("Input:D B F") and the trace is the same bubble sort.
No train / val / test partition applies: the original drew its splits independently (they can share inputs).
"""
from __future__ import annotations

import random

import numpy as np

from .example import Example, example_from_text
from .parity import parity_text
from .sorting import LETTERS, bubble_sort_trace

ARITHMETIC_SHARE = 0.3


def original_parity_mix(n: int, seed: int, min_bits: int = 2, max_bits: int = 8,
                        parity_share: float = 1.0 - ARITHMETIC_SHARE) -> list[tuple[str, dict]]:
    """n (text, meta) pairs of the original ReasoningDataset(seed): parity with probability parity_share (the
    original: 0.7), else "a+b" / "a-b" (0-99) with its worked step."""
    mix, content = random.Random(seed), random.Random(seed)
    out = []
    for _ in range(n):
        if mix.random() < 1.0 - parity_share:
            op = content.choice(["+", "-"])
            a, b = content.randint(0, 99), content.randint(0, 99)
            value = a + b if op == "+" else a - b
            expr = f"{a}{op}{b}"
            out.append((f"<BOS>Input:{expr} {expr}={value} Result:{value}<HALT><EOS>",
                        {"kind": "two_operand", "op": op}))
            continue
        n_bits = mix.randint(min_bits, max_bits)
        bits = [content.randint(0, 1) for _ in range(n_bits)]
        acc, steps = bits[0], []
        for bit in bits[1:]:
            steps.append(f"{acc}^{bit}={acc ^ bit}")
            acc ^= bit
        bits_text = "".join(map(str, bits))
        out.append((f"<BOS>Input:{bits_text} {' '.join(steps)} Result:{acc}<HALT><EOS>",
                    {"kind": "parity", "n_bits": n_bits}))
    return out


def original_chains(n: int, seed: int, min_ops: int, max_ops: int) -> list[tuple[str, dict]]:
    """n (text, meta) pairs of the original ArithmeticChainDataset(seed, min_ops, max_ops)."""
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        n_ops = int(rng.randint(min_ops, max_ops + 1))
        acc = int(rng.randint(1, 10))
        expr, steps = [str(acc)], []
        for _ in range(n_ops):
            op = str(rng.choice(["+", "-"]))
            operand = int(rng.randint(1, 10))
            new = min(99, max(0, acc + operand if op == "+" else acc - operand))
            expr.append(f"{op}{operand}")
            steps.append(f"{acc}{op}{operand}={new}")
            acc = new
        out.append((f"<BOS>Input:{''.join(expr)} {' '.join(steps)} Result:{acc}<HALT><EOS>",
                    {"kind": "arithmetic", "n_ops": n_ops}))
    return out


def original_sorting(n: int, seed: int, min_letters: int = 3, max_letters: int = 6) -> list[tuple[str, dict]]:
    """n (text, meta) pairs of the original SortingDataset(seed, sym_range=(min_letters, max_letters))."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        n_letters = rng.randint(min_letters, max_letters)
        letters = [rng.choice(LETTERS) for _ in range(n_letters)]
        steps, result = bubble_sort_trace("".join(letters))
        out.append((f"<BOS>Input:{' '.join(letters)} {' '.join(steps)} Result:{' '.join(result)}<HALT><EOS>",
                    {"kind": "sorting", "n_letters": n_letters}))
    return out


def original_generation_examples(n_in_dist: int = 400, n_ood: int = 100, seed: int = 2024) -> list[Example]:
    """The original's free-generation set, pooled: n_in_dist parity inputs of 2-8 bits, then n_ood of 9 or 10 bits
    (meta "ood" True), drawn as its generate_test_inputs did; each a parity example with its trace."""
    rng = random.Random(seed)
    out = []
    for i in range(n_in_dist + n_ood):
        ood = i >= n_in_dist
        n_bits = rng.choice([9, 10]) if ood else rng.randint(2, 8)
        bits = "".join(str(rng.randint(0, 1)) for _ in range(n_bits))
        out.append(example_from_text(parity_text(bits), {"kind": "parity", "n_bits": n_bits, "ood": ood}))
    return out
