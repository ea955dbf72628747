"""Which split an input belongs to, so that train, val and test share no input where the task space allows.

Inputs are grouped in strata (parity: one per bit count; sorting: one per letter count; chains: one per operation
count; "a+b"/"a-b": one). A stratum of at least PARTITION_MIN_SIZE distinct inputs is divided between the splits
by a hash of each input (80% train, 10% val, 10% test), so each split's share holds at least 100 distinct inputs
and no input is in two splits. A smaller stratum (parity of 2-9 bits, sorting of 3 letters, chains of 1
operation) is shared by all splits: the split sizes exceed it, so repeats are unavoidable anyway. The assignment
depends on the input alone, not on the seed, so splits drawn with any seeds stay disjoint. Within a split, inputs
are drawn with replacement.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable

PARTITION_MIN_SIZE = 1000


def split_of(kind: str, input_text: str) -> str:
    """The split that owns `input_text` of a partitioned stratum of task `kind`: a hash of both picks one of ten
    buckets, 8 for "train", 1 for "val", 1 for "test"."""
    digest = hashlib.blake2b(f"{kind}:{input_text}".encode(), digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") % 10
    return "train" if bucket < 8 else "val" if bucket == 8 else "test"


def draw_input(kind: str, split: str, stratum_size: int, draw: Callable[[], str]) -> str:
    """Call `draw` (a uniform draw from a stratum of `stratum_size` inputs) until its input belongs to `split`."""
    while True:
        input_text = draw()
        if stratum_size < PARTITION_MIN_SIZE or split_of(kind, input_text) == split:
            return input_text
