"""Padded tensors of examples for training and evaluation, in the corrected or the original ("faithful") layout."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pna.tokenizer import TOKENIZER

from .example import Example, halt_labels
from .splits import PROTOCOLS

# Padded length of each task: the longest example of its default splits fits (tested). Parity with 10 bits
# (71 tokens) and longer custom ranges need a longer max_len.
MAX_LEN = {"parity": 64, "sorting": 128, "arithmetic": 72}
# The original's padded lengths (its max_seq_len); its model saw max_len - 1 positions (see TaskDataset).
ORIGINAL_MAX_LEN = {"parity": 64, "sorting": 128, "arithmetic": 64}


class TaskDataset(Dataset):
    """Examples padded to a common length; item i is a dict of (L,) tensors and two scalars (see make_loader).

    protocol "corrected": L = max_len; an example longer than max_len is an error; halt labels are 0 at PAD.
    protocol "faithful" (the original's ReasoningDataset / ArithmeticChainDataset layout): each token list is cut
    or PAD-padded to max_len tokens and the model reads the first L = max_len - 1 (targets are the last L), so a
    longer example is truncated, not refused; rp = min(rp, max_len - 2) (a truncated chain that lost "Result:"
    keeps the clamped rp, as the original did); halt labels are 0 / 0.5 at rp-2, rp-1 / 1 from rp to the end,
    PAD included.
    """

    def __init__(self, examples: list[Example], max_len: int, protocol: str = "corrected") -> None:
        if not examples:
            raise ValueError("examples: expected at least one example")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
        if max_len < 2:
            raise ValueError(f"max_len: expected >= 2, got {max_len}")
        pad = TOKENIZER.pad_id
        if protocol == "corrected":
            too_long = [len(e.ids) for e in examples if len(e.ids) > max_len]
            if too_long:
                raise ValueError(f"max_len: {len(too_long)} examples are longer than {max_len} tokens "
                                 f"(longest {max(too_long)})")
            tokens = torch.tensor([e.ids + [pad] * (max_len - len(e.ids)) for e in examples])
            self.input_ids = tokens
            targets = torch.cat([tokens[:, 1:], torch.full_like(tokens[:, :1], pad)], dim=1)
            rp = [e.result_pos for e in examples]
        else:
            tokens = torch.tensor([e.ids[:max_len] + [pad] * (max_len - len(e.ids)) for e in examples])
            self.input_ids, targets = tokens[:, :-1], tokens[:, 1:]
            rp = [min(e.result_pos, max_len - 2) for e in examples]
        width = self.input_ids.shape[1]
        self.examples = examples
        self.max_len = max_len
        self.protocol = protocol
        self.targets = targets.masked_fill(targets == pad, -100)
        self.lengths = (self.input_ids != pad).sum(dim=1)
        self.result_pos = torch.tensor(rp)
        self.halt_labels = torch.tensor([halt_labels(width, r) for r in rp])
        if protocol == "corrected":
            self.halt_labels[self.input_ids == pad] = 0.0
        is_halt = self.input_ids == TOKENIZER.halt_id
        halt_pos = torch.where(is_halt.any(dim=1), is_halt.float().argmax(dim=1), torch.full_like(self.lengths, width))
        self.halt_mask = (torch.arange(width) <= halt_pos[:, None]) & (self.input_ids != pad)

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
    protocol: str = "corrected",
) -> DataLoader:
    """Batches of dicts: input_ids (B, L) long, PAD-padded (L = max_len, or max_len - 1 under protocol
    "faithful", see TaskDataset); targets (B, L) long, the next token or -100 where it is PAD; halt_labels (B, L)
    float (PAD: 0 corrected, 1 faithful); halt_mask (B, L) bool, non-PAD positions up to and including HALT;
    result_pos (B,) long; lengths (B,) long, non-PAD tokens. Shuffling is seeded; distributed=True shards with a
    DistributedSampler (call loader.sampler.set_epoch(epoch) each epoch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    dataset = TaskDataset(examples, max_len, protocol)
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)
