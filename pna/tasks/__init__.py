"""Synthetic character-level tasks: examples, splits, halt labels and data loaders.

Tasks: "parity" (running-XOR traces; the training and validation splits mix 70% parity with 30% "a+b" / "a-b",
the test split is pure parity), "sorting" (bubble-sort traces) and "arithmetic" (chains, the transfer target).
Splits have 8000 / 1000 / 1000 examples drawn with seeds 42 / 123 / 456, so the same call always gives the same
data; partition.py says how the splits avoid sharing inputs. protocol="faithful" replays the original work's
generators instead (pna.tasks.original), with the original's mixed test split and truncating layout.
"""
from .dataset import MAX_LEN, ORIGINAL_MAX_LEN, TaskDataset, make_loader
from .example import Example, example_from_text, halt_labels
from .splits import PROTOCOLS, SPLIT_SEEDS, SPLIT_SIZES, TASKS, first_answer_in, make_split

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
]
