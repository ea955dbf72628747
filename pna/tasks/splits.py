"""Deterministic train / val / test splits of each task (see partition.py for how the splits stay disjoint)."""
from __future__ import annotations

import random

from .arithmetic import sample_chain
from .example import Example, example_from_text
from .original import original_chains, original_parity_mix, original_sorting
from .parity import sample_parity_mix
from .sorting import sample_sorting

TASKS = ("parity", "sorting", "arithmetic")
# "corrected": our generators (disjoint splits, pure-parity test split, single-digit chains); "faithful": the
# original work's generators draw for draw (pna.tasks.original).
PROTOCOLS = ("corrected", "faithful")
SPLIT_SIZES = {"train": 8000, "val": 1000, "test": 1000}
SPLIT_SEEDS = {"train": 42, "val": 123, "test": 456}
# Task kwargs giving a count range: (lowest count a trace needs, min name, max name).
_COUNT_RANGES = {"parity": (1, "min_bits", "max_bits"), "sorting": (2, "min_letters", "max_letters"),
                 "arithmetic": (1, "min_ops", "max_ops")}


def _task_defaults(task: str, split: str, protocol: str) -> dict:
    if task == "parity":
        pure_test = split == "test" and protocol == "corrected"
        return {"min_bits": 2, "max_bits": 8, "parity_share": 1.0 if pure_test else 0.7}
    if task == "sorting":
        return {"min_letters": 3, "max_letters": 6}
    return {"min_ops": 2, "max_ops": 8 if split == "test" else 6}


def _check_kwargs(task: str, kw: dict) -> None:
    lowest, lo_name, hi_name = _COUNT_RANGES[task]
    lo, hi = kw[lo_name], kw[hi_name]
    if not (isinstance(lo, int) and isinstance(hi, int) and lowest <= lo <= hi):
        raise ValueError(f"task_kwargs: expected integers {lowest} <= {lo_name} <= {hi_name}, got {lo}, {hi}")
    if task == "parity" and not 0.0 <= kw["parity_share"] <= 1.0:
        raise ValueError(f"task_kwargs: parity_share must be in [0, 1], got {kw['parity_share']}")


def make_split(task: str, split: str, n: int | None = None, seed: int | None = None, *, protocol: str = "corrected",
               **task_kwargs) -> list[Example]:
    """Examples of one split of a task, deterministic given (task, split, n, seed, protocol, task_kwargs).

    Args:
        task: "parity", "sorting" or "arithmetic".
        split: "train", "val" or "test"; sets the default size and seed and which inputs may be drawn.
        n: number of examples (default 8000 / 1000 / 1000).
        seed: RNG seed (default 42 / 123 / 456).
        protocol: "corrected" (our generators: splits share no input, see partition.py) or "faithful" (the
            original's generators draw for draw, pna.tasks.original: the parity split mixes in 30% "a+b" with its
            worked step in test too, chains start 1-9 with values clamped to 0-99, sorting letters are spaced).
        task_kwargs: parity min_bits, max_bits (2, 8), parity_share (0.7 in train and val: the rest is
            "a+b" / "a-b"; 1.0 in the corrected test split, 0.7 in the faithful one); sorting min_letters,
            max_letters (3, 6); arithmetic min_ops, max_ops (2, 6 in train and val; 2, 8 in test).
    """
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    if split not in SPLIT_SIZES:
        raise ValueError(f"split: expected one of {tuple(SPLIT_SIZES)}, got {split!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    kw = _task_defaults(task, split, protocol)
    unknown = set(task_kwargs) - set(kw)
    if unknown:
        raise ValueError(f"task_kwargs: {sorted(unknown)} do not apply to {task}; expected some of {sorted(kw)}")
    kw.update(task_kwargs)
    _check_kwargs(task, kw)
    n = SPLIT_SIZES[split] if n is None else n
    if n < 0:
        raise ValueError(f"n: expected a non-negative count, got {n}")
    seed = SPLIT_SEEDS[split] if seed is None else seed
    if protocol == "faithful":
        original = {"parity": original_parity_mix, "sorting": original_sorting, "arithmetic": original_chains}[task]
        return [example_from_text(text, meta) for text, meta in original(n, seed, **kw)]
    rng = random.Random(seed)
    sample = {"parity": sample_parity_mix, "sorting": sample_sorting, "arithmetic": sample_chain}[task]
    return [example_from_text(*sample(rng, split, **kw)) for _ in range(n)]


def first_answer_in(examples: list[Example], first_tokens: str = "01") -> list[int]:
    """Indices of the examples whose first answer character (the token after "Result:") is one of first_tokens.

    The original analysed its mixed test split filtered this way (its get_parity_indices): every parity example
    and the two-operand examples whose value starts with 0 or 1 (0, 1, 10-19, 100-198)."""
    return [i for i, ex in enumerate(examples) if ex.answer and ex.answer[0] in first_tokens]
