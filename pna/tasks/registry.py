"""The task registry: every task the trainer, the sweep and the CLI offer, by name.

The built-in tasks (parity, sorting, arithmetic) are registered from splits.py. A new task is one file in this
package that calls ``register``; ``discover`` imports every module of the package, so dropping the file in
is enough:

    # pna/tasks/copying.py
    from .registry import TaskSpec, register

    def sample(rng, split, **kwargs):            # -> (text "<BOS>Input:... Result:...<HALT><EOS>", meta)
        ...

    register(TaskSpec(name="copying", sample=sample, max_len=64))

Registered tasks get deterministic splits with the same sizes and seeds as the built-in ones (8000 / 1000 /
1000; 42 / 123 / 456), their max_len in MAX_LEN, and a place in TASKS.
"""
from __future__ import annotations

import importlib
import pkgutil
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from .dataset import MAX_LEN
from .example import Example, example_from_text


@dataclass(frozen=True)
class TaskSpec:
    """One task. sample(rng, split, **kwargs) -> (text, meta): one example's text framed
    "<BOS>...Result:<answer><HALT><EOS>" and its facts; max_len: padded length that fits every example of the
    default splits; defaults(split) -> the default sample kwargs of a split; make_split: the split builder
    (split, n, seed, **kwargs) -> examples, if the task builds its splits itself (the built-in ones do)."""

    name: str
    max_len: int
    sample: Callable[..., tuple[str, dict]] | None = None
    defaults: Callable[[str], dict[str, Any]] = field(default=lambda split: {})
    make_split: Callable[..., list[Example]] | None = None

    def split(self, split: str, n: int, seed: int, **kwargs: Any) -> list[Example]:
        """n examples of a split drawn with seed (kwargs over the defaults)."""
        if self.make_split is not None:
            return self.make_split(split, n=n, seed=seed, **kwargs)
        unknown = set(kwargs) - set(self.defaults(split))
        if unknown:
            raise ValueError(f"task_kwargs: {sorted(unknown)} do not apply to {self.name}")
        rng = random.Random(seed)
        options = {**self.defaults(split), **kwargs}
        return [example_from_text(*self.sample(rng, split, **options)) for _ in range(n)]


REGISTRY: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    """Add a task (ValueError if the name is taken by another spec); returns it."""
    if not (isinstance(spec.max_len, int) and spec.max_len >= 4):
        raise ValueError(f"max_len: expected an integer >= 4, got {spec.max_len!r}")
    if (spec.sample is None) == (spec.make_split is None):
        raise ValueError(f"{spec.name}: give exactly one of sample and make_split")
    held = REGISTRY.get(spec.name)
    if held is not None and held != spec:
        raise ValueError(f"name: a task called {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    MAX_LEN[spec.name] = spec.max_len
    return spec


def discover() -> None:
    """Import every module of pna.tasks, so each task file registers itself."""
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{module.name}")
