"""One tokenised example and its halt labels."""
from __future__ import annotations

from dataclasses import dataclass, field

from pna.tokenizer import TOKENIZER


@dataclass
class Example:
    """One tokenised example: text with specials, its ids, rp = index of the "Result:" token in ids, the answer
    (the text between "Result:" and "<HALT>") and task facts in meta (kind, n_bits / n_letters / n_ops / op)."""

    text: str
    ids: list[int]
    result_pos: int
    answer: str
    meta: dict = field(default_factory=dict)


def example_from_text(text: str, meta: dict | None = None) -> Example:
    """Tokenise a task string framed "<BOS>...Result:<answer><HALT><EOS>" with exactly one "Result:"."""
    ids = TOKENIZER.encode(text)
    if ids[:1] != [TOKENIZER.bos_id] or ids[-2:] != [TOKENIZER.halt_id, TOKENIZER.eos_id]:
        raise ValueError(f"text: expected '<BOS>...<HALT><EOS>', got {text!r}")
    if ids.count(TOKENIZER.result_id) != 1 or ids.count(TOKENIZER.halt_id) != 1 or TOKENIZER.pad_id in ids:
        raise ValueError(f"text: expected exactly one 'Result:', one '<HALT>' and no '<PAD>', got {text!r}")
    answer = text.split("Result:", 1)[1].removesuffix("<HALT><EOS>")
    return Example(text=text, ids=ids, result_pos=ids.index(TOKENIZER.result_id), answer=answer, meta=dict(meta or {}))


def halt_labels(length: int, result_pos: int) -> list[float]:
    """Halt targets of positions 0..length-1: 0 before rp-2, 0.5 at rp-2 and rp-1, 1 from rp on."""
    if not 0 <= result_pos < length:
        raise ValueError(f"result_pos: expected 0 <= result_pos < length = {length}, got {result_pos}")
    return [0.0 if t < result_pos - 2 else 0.5 if t < result_pos else 1.0 for t in range(length)]
