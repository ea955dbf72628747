"""Synthetic character-level tasks: examples, splits, halt labels and data loaders.

Tasks: "parity" (running-XOR traces; the training and validation splits mix 70% parity with 30% "a+b" / "a-b",
the test split is pure parity), "sorting" (bubble-sort traces) and "arithmetic" (chains, the transfer target).
Splits have 8000 / 1000 / 1000 examples drawn with seeds 42 / 123 / 456, so the same call always gives the same
data; partition.py says how the splits avoid sharing inputs. Tasks are looked up in registry.py: a new task is
one file of this package that registers itself (see there); TASKS, MAX_LEN and make_split cover it.
protocol="faithful" replays the original work's generators instead (pna.tasks.original), with the original's
mixed test split and truncating layout (built-in tasks only).
"""
from functools import partial

from . import registry
from .dataset import MAX_LEN, ORIGINAL_MAX_LEN, TaskDataset, make_loader
from .example import Example, example_from_text, halt_labels
from .splits import PROTOCOLS, SPLIT_SEEDS, SPLIT_SIZES, first_answer_in
from .splits import TASKS as _BUILT_IN
from .splits import make_split as _make_builtin_split

for _name in _BUILT_IN:
    registry.register(registry.TaskSpec(name=_name, max_len=MAX_LEN[_name],
                                        make_split=partial(_make_builtin_split, _name)))
registry.discover()
TASKS = tuple(registry.REGISTRY)  # at import; registry.REGISTRY also holds tasks registered later


def make_split(task: str, split: str, n: int | None = None, seed: int | None = None, **task_kwargs) -> list[Example]:
    """Examples of one split of a registered task, deterministic given (task, split, n, seed, task_kwargs);
    n and seed default to the split's SPLIT_SIZES and SPLIT_SEEDS (see splits.make_split for the built-in
    tasks' options)."""
    if task not in registry.REGISTRY:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    if split not in SPLIT_SIZES:
        raise ValueError(f"split: expected one of {tuple(SPLIT_SIZES)}, got {split!r}")
    n = SPLIT_SIZES[split] if n is None else n
    if n < 0:
        raise ValueError(f"n: expected a non-negative count, got {n}")
    return registry.REGISTRY[task].split(split, n=n, seed=SPLIT_SEEDS[split] if seed is None else seed, **task_kwargs)


__all__ = [
    "MAX_LEN",
    "ORIGINAL_MAX_LEN",
    "PROTOCOLS",
    "SPLIT_SEEDS",
    "SPLIT_SIZES",
    "TASKS",
    "Example",
    "TaskDataset",
    "example_from_text",
    "first_answer_in",
    "halt_labels",
    "make_loader",
    "make_split",
    "registry",
]
