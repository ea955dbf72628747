"""Sorting letters with a bubble-sort trace.

    <BOS>Input:DBC D>B swap D>C swap B<C keep Result:B C D<HALT><EOS>

n letters from A-F drawn uniformly with replacement. Each comparison of neighbours is written "X>Y swap",
"X<Y keep" or, for equal letters, "X=Y keep"; passes run left to right over the unsorted prefix, and sorting stops
after the first pass without a swap (the usual early exit), so already-sorted input costs one pass. The longest
example (6 letters in strictly falling order, 15 comparisons) has 113 tokens, within the 128-token budget.
"""
from __future__ import annotations

import random
import re

from .partition import draw_input

LETTERS = "ABCDEF"
_INPUT = re.compile(f"[{LETTERS}]{{2,}}")


def bubble_sort_trace(letters: str) -> tuple[list[str], str]:
    """The comparison steps of bubble sort on `letters` and the sorted letters."""
    arr = list(letters)
    steps = []
    for end in range(len(arr) - 1, 0, -1):
        swapped = False
        for j in range(end):
            x, y = arr[j], arr[j + 1]
            if x > y:
                steps.append(f"{x}>{y} swap")
                arr[j], arr[j + 1] = y, x
                swapped = True
            else:
                steps.append(f"{x}{'=' if x == y else '<'}{y} keep")
        if not swapped:
            break
    return steps, "".join(arr)


def sorting_text(letters: str) -> str:
    """Sorting example for a string of at least two letters A-F."""
    if not _INPUT.fullmatch(letters):
        raise ValueError(f"letters: expected at least two letters from {LETTERS}, got {letters!r}")
    steps, result = bubble_sort_trace(letters)
    return f"<BOS>Input:{letters} {' '.join(steps)} Result:{' '.join(result)}<HALT><EOS>"


def sample_sorting(rng: random.Random, split: str, min_letters: int, max_letters: int) -> tuple[str, dict]:
    """A sorting example with a uniform letter count in min_letters..max_letters, uniform letters of `split`'s
    share."""
    n = rng.randint(min_letters, max_letters)
    letters = draw_input("sorting", split, len(LETTERS) ** n, lambda: "".join(rng.choice(LETTERS) for _ in range(n)))
    return sorting_text(letters), {"kind": "sorting", "n_letters": n}
