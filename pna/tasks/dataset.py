"""Padded tensors of examples for training and evaluation."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pna.tokenizer import TOKENIZER

from .example import Example, halt_labels

# Padded length of each task: the longest example of its default splits fits (tested). Parity with 10 bits
# (71 tokens) and longer custom ranges need a longer max_len.
MAX_LEN = {"parity": 64, "sorting": 128, "arithmetic": 72}


class TaskDataset(Dataset):
    """Examples padded to max_len; item i is a dict of (max_len,) tensors and two scalars (see make_loader)."""

    def __init__(self, examples: list[Example], max_len: int) -> None:
        if not examples:
            raise ValueError("examples: expected at least one example")
        too_long = [len(e.ids) for e in examples if len(e.ids) > max_len]
        if too_long:
            raise ValueError(f"max_len: {len(too_long)} examples are longer than {max_len} tokens "
                             f"(longest {max(too_long)})")
        self.examples = examples
        self.max_len = max_len
        lengths = [len(e.ids) for e in examples]
        pad = TOKENIZER.pad_id
        self.input_ids = torch.tensor([e.ids + [pad] * (max_len - n) for e, n in zip(examples, lengths)])
        self.targets = torch.full_like(self.input_ids, -100)
        self.targets[:, :-1] = self.input_ids[:, 1:].masked_fill(self.input_ids[:, 1:] == pad, -100)
        self.halt_labels = torch.tensor([halt_labels(n, e.result_pos) + [0.0] * (max_len - n)
                                         for e, n in zip(examples, lengths)])
        self.lengths = torch.tensor(lengths)
        self.result_pos = torch.tensor([e.result_pos for e in examples])
        halt_pos = torch.tensor([e.ids.index(TOKENIZER.halt_id) for e in examples])
        self.halt_mask = torch.arange(max_len) <= halt_pos[:, None]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids[i],
            "targets": self.targets[i],
            "halt_labels": self.halt_labels[i],
            "halt_mask": self.halt_mask[i],
            "result_pos": self.result_pos[i],
            "lengths": self.lengths[i],
        }


def make_loader(
    examples: list[Example],
    batch_size: int,
    shuffle: bool,
    seed: int,
    max_len: int,
    distributed: bool = False,
) -> DataLoader:
    """Batches of dicts: input_ids (B, L) long, PAD-padded to L = max_len; targets (B, L) long, the next token or
    -100 where it is PAD; halt_labels (B, L) float (0 at PAD); halt_mask (B, L) bool, non-PAD positions up to and
    including HALT; result_pos (B,) long; lengths (B,) long, non-PAD tokens. Shuffling is seeded;
    distributed=True shards with a DistributedSampler (call loader.sampler.set_epoch(epoch) each epoch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    dataset = TaskDataset(examples, max_len)
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)
