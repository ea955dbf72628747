"""Synthetic character-level tasks: examples, splits, halt labels and data loaders.

Tasks: "parity" (training and validation splits mix 70% parity with 30% "a+b" / "a-b"; the test split is pure
parity), "sorting" (bubble-sort traces) and "arithmetic" (chains, the transfer target). Splits have 8000 / 1000 /
1000 examples drawn with seeds 42 / 123 / 456, so the same call always gives the same data. Splits are drawn
independently: parity with 2-8 bits has only 508 distinct inputs, so its splits necessarily share inputs (the
9-10 bit out-of-distribution set, min_bits=9, max_bits=10, shares none).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pna.tokenizer import TOKENIZER

from .arithmetic import sample_chain
from .parity import sample_parity, sample_parity_mix
from .sorting import sample_sorting

TASKS = ("parity", "sorting", "arithmetic")
SPLIT_SIZES = {"train": 8000, "val": 1000, "test": 1000}
SPLIT_SEEDS = {"train": 42, "val": 123, "test": 456}
# Padded length of each task's examples; the longest default example of each fits (tested).
MAX_LEN = {"parity": 64, "sorting": 128, "arithmetic": 80}


@dataclass
class Example:
    """One tokenised example; result_pos (rp) is the index of the "Result:" token in ids."""

    text: str
    ids: list[int]
    result_pos: int
    answer: str
    meta: dict = field(default_factory=dict)


def _task_defaults(task: str, split: str) -> dict:
    if task == "parity":
        return {"min_bits": 2, "max_bits": 8, "parity_share": 1.0 if split == "test" else 0.7}
    if task == "sorting":
        return {"min_letters": 3, "max_letters": 6}
    return {"min_ops": 2, "max_ops": 8 if split == "test" else 6}


def _sample(task: str, rng: random.Random, kw: dict) -> tuple[str, dict]:
    if task == "parity":
        return sample_parity_mix(rng, kw["min_bits"], kw["max_bits"], kw["parity_share"])
    if task == "sorting":
        return sample_sorting(rng, kw["min_letters"], kw["max_letters"])
    return sample_chain(rng, kw["min_ops"], kw["max_ops"])


def example_from_text(text: str, meta: dict | None = None) -> Example:
    """Tokenise a task string and locate its "Result:" token and answer."""
    ids = TOKENIZER.encode(text)
    if TOKENIZER.result_id not in ids:
        raise ValueError(f"text: no 'Result:' token in {text!r}")
    rp = ids.index(TOKENIZER.result_id)
    answer = text.split("Result:", 1)[1].split("<HALT>", 1)[0]
    return Example(text=text, ids=ids, result_pos=rp, answer=answer, meta=dict(meta or {}))


def make_split(task: str, split: str, n: int | None = None, seed: int | None = None, **task_kwargs) -> list[Example]:
    """Examples of one split of a task, deterministic given (task, split, n, seed, task_kwargs).

    Args:
        task: "parity", "sorting" or "arithmetic".
        split: "train", "val" or "test" (sets the default size and seed).
        n: number of examples (default 8000 / 1000 / 1000).
        seed: RNG seed (default 42 / 123 / 456).
        task_kwargs: parity min_bits, max_bits, parity_share; sorting min_letters, max_letters;
            arithmetic min_ops, max_ops.
    """
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    if split not in SPLIT_SIZES:
        raise ValueError(f"split: expected one of {tuple(SPLIT_SIZES)}, got {split!r}")
    kw = _task_defaults(task, split)
    unknown = set(task_kwargs) - set(kw)
    if unknown:
        raise ValueError(f"task_kwargs: {sorted(unknown)} do not apply to {task}; expected some of {sorted(kw)}")
    kw.update(task_kwargs)
    n = SPLIT_SIZES[split] if n is None else n
    if n < 0:
        raise ValueError(f"n: expected a non-negative count, got {n}")
    rng = random.Random(SPLIT_SEEDS[split] if seed is None else seed)
    return [example_from_text(*_sample(task, rng, kw)) for _ in range(n)]


def halt_labels(length: int, result_pos: int) -> list[float]:
    """Halt targets of a sequence: 0 before rp-2, 0.5 at rp-2 and rp-1, 1 from rp on."""
    return [0.0 if t < result_pos - 2 else 0.5 if t < result_pos else 1.0 for t in range(length)]


class TaskDataset(Dataset):
    """Examples padded to max_len, as dicts of tensors (see make_loader for the fields)."""

    def __init__(self, examples: list[Example], max_len: int) -> None:
        too_long = [e for e in examples if len(e.ids) > max_len]
        if too_long:
            raise ValueError(f"max_len: {len(too_long)} examples are longer than {max_len} tokens "
                             f"(longest {max(len(e.ids) for e in too_long)})")
        self.examples = examples
        self.max_len = max_len

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ex = self.examples[i]
        length = len(ex.ids)
        ids = torch.full((self.max_len,), TOKENIZER.pad_id, dtype=torch.long)
        ids[:length] = torch.tensor(ex.ids)
        targets = torch.full((self.max_len,), -100, dtype=torch.long)
        targets[: length - 1] = ids[1:length]
        halt_mask = torch.zeros(self.max_len, dtype=torch.bool)
        halt_pos = ex.ids.index(TOKENIZER.halt_id) if TOKENIZER.halt_id in ex.ids else length - 1
        halt_mask[: halt_pos + 1] = True
        return {
            "input_ids": ids,
            "targets": targets,
            "halt_labels": torch.tensor(halt_labels(self.max_len, ex.result_pos)),
            "halt_mask": halt_mask,
            "result_pos": torch.tensor(ex.result_pos),
            "lengths": torch.tensor(length),
        }


def make_loader(
    examples: list[Example],
    batch_size: int,
    shuffle: bool,
    seed: int,
    max_len: int,
    distributed: bool = False,
) -> DataLoader:
    """Batches of dicts: input_ids (B, L) long (PAD-padded); targets (B, L) long, the next token or -100 where it
    is PAD; halt_labels (B, L) float; halt_mask (B, L) bool, non-PAD positions up to and including HALT;
    result_pos (B,) long; lengths (B,) long. Shuffling is seeded; distributed=True shards with a
    DistributedSampler (call loader.sampler.set_epoch(epoch) each epoch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    dataset = TaskDataset(examples, max_len)
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)
