"""Sorting letters with a bubble-sort trace.

    <BOS>Input:DBC D>B swap D>C swap B<C keep Result:B C D<HALT><EOS>

n letters from A-F drawn with replacement. Each comparison of neighbours is written "X>Y swap", "X<Y keep" or
"X=Y keep"; passes run left to right over the unsorted prefix, and sorting stops after the first pass without
a swap (the usual early exit), so already-sorted input costs one pass.
"""
from __future__ import annotations

import random

LETTERS = "ABCDEF"


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
    """Sorting example for a letter string."""
    steps, result = bubble_sort_trace(letters)
    return f"<BOS>Input:{letters} {' '.join(steps)} Result:{' '.join(result)}<HALT><EOS>"


def sample_sorting(rng: random.Random, min_letters: int, max_letters: int) -> tuple[str, dict]:
    """A random sorting example with min_letters..max_letters letters."""
    n = rng.randint(min_letters, max_letters)
    letters = "".join(rng.choice(LETTERS) for _ in range(n))
    return sorting_text(letters), {"kind": "sorting", "n_letters": n}
