"""Greedy free generation through a model's decode step, and what it says about answers and halting.

Decoding starts from the task's prompt (for parity "<BOS>Input:{bits} ", see ``prompt_ids``) and feeds one token
per step through ``model.init_cache`` / ``model.step``. A sequence stops at the first of:

* "halt": the model emits the HALT token;
* "eos": the model emits EOS;
* "confidence": the halt confidence q = sigmoid(halt logit) at the token just fed exceeds ``halt_threshold``;
  the token chosen at that same step is still appended (it is the step's output), then decoding stops;
* "max_len": the sequence reached ``max_len`` tokens.

"Tokens saved" compares each sequence's length at stop with running every sequence to ``max_len``.

The original work's free generation (its generate.py / eval_generation.py) is available as options:
max_new_tokens=200 (each sequence stops after 200 generated tokens), halt_threshold=0.95 for halt-trained models
(None for CE-only ones, which it ran without the halt stop), parse="lenient" (its parse_output: the first
"Result:0"/"Result:1", else the last "=0"/"=1" after the input, else the last 0 or 1 after it), on the 400
in-distribution + 100 out-of-distribution inputs of pna.tasks.original.original_generation_examples, pooled.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch

from pna.tasks import Example
from pna.tokenizer import TOKENIZER

STOP_REASONS = ("halt", "eos", "confidence", "max_len")
HALT_STOPS = ("halt", "confidence")
PARSES = ("strict", "lenient")
# The original's generation budget: new tokens per sequence.
ORIGINAL_MAX_NEW_TOKENS = 200


@dataclass
class Generation:
    """One decoded sequence: ids (prompt included), why and where it stopped, and the answer it wrote.

    stop_reason is one of STOP_REASONS; answer is the decoded text between the generated "Result:" token and
    HALT/EOS/the end, or None when no "Result:" was generated; result_pos is the index of that "Result:" token
    (or -1).
    """

    ids: list[int]
    prompt_len: int
    stop_reason: str
    answer: str | None
    result_pos: int

    @property
    def lenient_answer(self) -> str | None:
        """The original's lenient parse of this generation (see lenient_parity_answer)."""
        return lenient_parity_answer(TOKENIZER.decode(self.ids), TOKENIZER.decode(self.ids[: self.prompt_len]))


def lenient_parity_answer(text: str, prompt: str) -> str | None:
    """The original's parse_output for parity: the digit of the first "Result:0" / "Result:1" anywhere in text;
    else, in the text after the prompt's "Input:<bits>", the digit of the last "=0" / "=1"; else the last 0 or 1
    there; else None. text: the whole decoded sequence (prompt included); prompt: the decoded prompt."""
    match = re.search(r"Result:([01])", text)
    if match:
        return match[1]
    marker = prompt.split(" ")[0].removeprefix("<BOS>")
    section = text.split(marker, 1)[-1] if marker and marker in text else text
    for pattern in (r"=([01])", r"([01])"):
        found = re.findall(pattern, section)
        if found:
            return found[-1]
    return None


@dataclass
class GenerationSummary:
    """Free-generation metrics over a set of examples.

    answer_accuracy: fraction whose generated answer equals the reference answer.
    halt_accuracy: fraction that stopped on their own halt signal (HALT token or q > threshold) at or after
        the generated "Result:" token, i.e. neither ran to max_len/EOS nor stopped before giving a result.
    tokens_saved: mean over examples of (max_len - length at stop).
    tokens_saved_fraction: sum of tokens saved / sum of (max_len - prompt length), the share of the decoding
        budget left unused.
    stop_reasons: count of each stop reason.
    """

    n: int
    answer_accuracy: float
    halt_accuracy: float
    tokens_saved: float
    tokens_saved_fraction: float
    max_len: int
    halt_threshold: float | None
    stop_reasons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def prompt_ids(example: Example) -> list[int]:
    """The decoding prompt of an example: its ids up to and including the first space after "Input:".

    For parity and arithmetic chains this is "<BOS>Input:{input} " (their inputs hold no space). Raises
    ValueError if the example has no "Input:" token or no space after it.
    """
    space_id = TOKENIZER.encode(" ")[0]
    if TOKENIZER.input_id not in example.ids:
        raise ValueError(f"example: no 'Input:' token in {example.text!r}")
    start = example.ids.index(TOKENIZER.input_id)
    for i in range(start + 1, len(example.ids)):
        if example.ids[i] == space_id:
            return list(example.ids[: i + 1])
    raise ValueError(f"example: no space after 'Input:' in {example.text!r}")


def _answer(ids: Sequence[int]) -> tuple[str | None, int]:
    """(answer text after the first "Result:" token up to HALT/EOS/end, index of that token) or (None, -1)."""
    if TOKENIZER.result_id not in ids:
        return None, -1
    rp = list(ids).index(TOKENIZER.result_id)
    end = rp + 1
    while end < len(ids) and ids[end] not in (TOKENIZER.halt_id, TOKENIZER.eos_id):
        end += 1
    return TOKENIZER.decode(list(ids[rp + 1 : end])), rp


@torch.no_grad()
def greedy_generate(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    max_len: int,
    halt_threshold: float | None = 0.95,
    device: torch.device | str = "cpu",
    max_new_tokens: int | None = None,
) -> list[Generation]:
    """Decode every prompt greedily in one batch (prompts may differ in length).

    model: has init_cache(batch_size) and step(token_ids (B,), cache) -> StepOutput(logits (B, V),
    halt_logits (B,), entropy (B,)), the cache being updated in place; prompts: P lists of token ids, each
    non-empty and shorter than max_len; halt_threshold: stop when q exceeds it (None: never stop on q);
    max_new_tokens: also stop a sequence after this many generated tokens (None: only max_len; the original: 200,
    with max_len >= the longest prompt + 200). Returns P Generations in prompt order.
    """
    if not prompts:
        raise ValueError("prompts: empty")
    if max_len < 2:
        raise ValueError(f"max_len: must be >= 2, got {max_len}")
    if halt_threshold is not None and not 0.0 < halt_threshold < 1.0:
        raise ValueError(f"halt_threshold: must lie in (0, 1) or be None, got {halt_threshold}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: must be >= 1 or None, got {max_new_tokens}")
    for i, prompt in enumerate(prompts):
        if not 0 < len(prompt) < max_len:
            raise ValueError(f"prompts: prompt {i} has {len(prompt)} tokens; need 1..{max_len - 1}")
    limits = [max_len if max_new_tokens is None else min(max_len, len(p) + max_new_tokens) for p in prompts]
    model.eval()
    seqs = [list(p) for p in prompts]
    reasons: list[str | None] = [None] * len(seqs)
    cache = model.init_cache(len(seqs))
    for t in range(max_len - 1):
        active = [b for b, r in enumerate(reasons) if r is None]
        if not active:
            break
        tokens = [seqs[b][t] if reasons[b] is None else TOKENIZER.pad_id for b in range(len(seqs))]
        out = model.step(torch.tensor(tokens, dtype=torch.long, device=device), cache)
        next_ids = out.logits.argmax(dim=-1).tolist()
        q = torch.sigmoid(out.halt_logits.float()).tolist()
        for b in active:
            if t < len(seqs[b]) - 1:  # still reading the prompt
                continue
            seqs[b].append(int(next_ids[b]))
            if next_ids[b] == TOKENIZER.halt_id:
                reasons[b] = "halt"
            elif next_ids[b] == TOKENIZER.eos_id:
                reasons[b] = "eos"
            elif halt_threshold is not None and q[b] > halt_threshold:
                reasons[b] = "confidence"
            elif len(seqs[b]) >= limits[b]:
                reasons[b] = "max_len"
    results = []
    for prompt, seq, reason in zip(prompts, seqs, reasons):
        answer, rp = _answer(seq)
        results.append(Generation(seq, len(prompt), reason or "max_len", answer, rp))
    return results


def answer_correct(generations: Sequence[Generation], examples: Sequence[Example], parse: str = "strict") -> list[bool]:
    """Per example: did the generation give the reference answer? parse "strict": the text written after the
    generated "Result:" equals it; "lenient": the original's parse (Generation.lenient_answer, parity only)."""
    if len(generations) != len(examples) or not generations:
        raise ValueError(f"generations: need one per example and at least one, got {len(generations)} for "
                         f"{len(examples)} examples")
    if parse not in PARSES:
        raise ValueError(f"parse: expected one of {PARSES}, got {parse!r}")
    answers = [g.answer if parse == "strict" else g.lenient_answer for g in generations]
    return [a is not None and a == ex.answer for a, ex in zip(answers, examples)]


def summarize_generations(
    generations: Sequence[Generation],
    examples: Sequence[Example],
    max_len: int,
    halt_threshold: float | None,
    parse: str = "strict",
) -> GenerationSummary:
    """Answer accuracy (under `parse`, see answer_correct), halting accuracy and tokens saved of generations
    against their reference examples."""
    correct = sum(answer_correct(generations, examples, parse))
    halted = sum(g.stop_reason in HALT_STOPS and g.result_pos >= 0 for g in generations)
    saved = [max_len - len(g.ids) for g in generations]
    budget = sum(max_len - g.prompt_len for g in generations)
    counts = Counter(g.stop_reason for g in generations)
    n = len(generations)
    return GenerationSummary(
        n=n,
        answer_accuracy=correct / n,
        halt_accuracy=halted / n,
        tokens_saved=sum(saved) / n,
        tokens_saved_fraction=sum(saved) / budget,
        max_len=max_len,
        halt_threshold=halt_threshold,
        stop_reasons={reason: counts.get(reason, 0) for reason in STOP_REASONS},
    )


def free_generation(
    model: torch.nn.Module,
    examples: Sequence[Example],
    max_len: int,
    halt_threshold: float | None = 0.95,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    max_new_tokens: int | None = None,
    parse: str = "strict",
) -> tuple[GenerationSummary, list[Generation]]:
    """Generate from every example's prompt (``prompt_ids``) in batches and summarise against the examples.

    The original's protocol: max_new_tokens=ORIGINAL_MAX_NEW_TOKENS, parse="lenient", halt_threshold 0.95 (None
    for CE-only models), on pna.tasks.original.original_generation_examples() (module docstring)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    generations: list[Generation] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        generations += greedy_generate(model, [prompt_ids(ex) for ex in chunk], max_len, halt_threshold, device,
                                       max_new_tokens)
    return summarize_generations(generations, examples, max_len, halt_threshold, parse), generations
