"""Teacher-forced evaluation arrays on a tiny untrained model, and greedy generation's stopping and counting."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pna.analysis import energy_entropy_bits
from pna.evaluate import Evaluation, evaluate
from pna.generate import (ORIGINAL_MAX_NEW_TOKENS, Generation, answer_correct, free_generation, greedy_generate,
                          lenient_parity_answer, prompt_ids, summarize_generations)
from pna.models import build_model
from pna.tasks import first_answer_in, make_split
from pna.tasks.original import original_generation_examples
from pna.tokenizer import TOKENIZER

MAX_LEN = 64


class ScriptedModel(torch.nn.Module):
    """Decode-step stub: once row b has read its prompt it emits the tokens of `script` one per step (then "0"s);
    its halt logit is -10, or +10 at positions >= `confident_at` when that is set."""

    def __init__(self, script: str, prompts: list[list[int]], confident_at: int | None = None) -> None:
        super().__init__()
        self.script = TOKENIZER.encode(script)
        self.prompt_lens = [len(p) for p in prompts]
        self.confident_at = confident_at

    def init_cache(self, batch_size: int) -> list[int]:
        return [0] * batch_size  # tokens fed so far per row

    def step(self, token_ids: torch.Tensor, cache: list[int]) -> SimpleNamespace:
        logits = torch.full((token_ids.shape[0], TOKENIZER.vocab_size), -1.0)
        halt = torch.full((token_ids.shape[0],), -10.0)
        for b in range(token_ids.shape[0]):
            t = cache[b]  # position of the token fed now
            cache[b] += 1
            emitted = t - self.prompt_lens[b] + 1  # index in script of the token this step emits
            token = self.script[emitted] if 0 <= emitted < len(self.script) else TOKENIZER.encode("0")[0]
            logits[b, token] = 1.0
            if self.confident_at is not None and t >= self.confident_at:
                halt[b] = 10.0
        return SimpleNamespace(logits=logits, halt_logits=halt, entropy=torch.zeros(token_ids.shape[0]))


def test_evaluate_untrained_tiny_model_shapes_and_result_pos() -> None:
    torch.manual_seed(0)
    examples = make_split("parity", "test", n=6)
    model = build_model("ssm", TOKENIZER.vocab_size, d_model=16, n_layers=1, d_state=4)
    ev = evaluate(model, examples, max_len=MAX_LEN, batch_size=4)
    assert ev.n == 6
    for name in ("entropy", "halt_logits", "halt_labels"):
        assert getattr(ev, name).shape == (6, MAX_LEN), name
        assert np.isfinite(getattr(ev, name)).all(), name
    assert ev.q.shape == (6, MAX_LEN) and ((ev.q > 0) & (ev.q < 1)).all()
    np.testing.assert_array_equal(ev.result_pos, [ex.result_pos for ex in examples])
    np.testing.assert_array_equal(ev.lengths, [len(ex.ids) for ex in examples])
    np.testing.assert_array_equal(ev.eos_pos, [ex.ids.index(TOKENIZER.eos_id) for ex in examples])
    np.testing.assert_array_equal(ev.halt_pos, [ex.ids.index(TOKENIZER.halt_id) for ex in examples])
    assert (ev.token_count == ev.lengths - 1).all()
    assert 0.0 <= ev.token_accuracy <= 1.0 and ev.answer_correct.dtype == bool


def test_evaluation_save_load_roundtrip(tmp_path) -> None:
    examples = make_split("parity", "test", n=3)
    model = build_model("ssm", TOKENIZER.vocab_size, d_model=16, n_layers=1, d_state=4)
    ev = evaluate(model, examples, max_len=MAX_LEN)
    back = Evaluation.load(ev.save(tmp_path / "ev.npz"))
    for name in Evaluation.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(back, name), getattr(ev, name))


class PerfectModel(torch.nn.Module):
    """Teacher-forced stub that predicts every next token of the given examples exactly (so accuracy is 1)."""

    def __init__(self, examples, wrong_answer: bool = False, n_state: int = 0) -> None:
        super().__init__()
        self.n_state = n_state
        self.by_prefix = {}
        for ex in examples:
            ids = list(ex.ids)
            if wrong_answer:
                ids[ex.result_pos + 1] = TOKENIZER.encode("7")[0]
            self.by_prefix[tuple(ex.ids[:3])] = ids

    def forward(self, input_ids: torch.Tensor, return_channel_mean: bool = False) -> SimpleNamespace:
        b, length = input_ids.shape
        logits = torch.zeros(b, length, TOKENIZER.vocab_size)
        for i in range(b):
            ids = self.by_prefix[tuple(input_ids[i, :3].tolist())]
            for p in range(min(len(ids), length + 1) - 1):
                logits[i, p, ids[p + 1]] = 1.0
        channel_mean = None
        if return_channel_mean and self.n_state:  # a state whose energy spreads as the position grows
            channel_mean = (torch.arange(self.n_state)[None, None, :] <= torch.arange(length)[None, :, None]).float()
            channel_mean = channel_mean.expand(b, length, self.n_state)
        return SimpleNamespace(logits=logits, halt_logits=torch.zeros(b, length), entropy=torch.ones(b, length),
                               channel_mean=channel_mean)


def test_teacher_forced_accuracy_counts_answers() -> None:
    examples = [ex for ex in make_split("parity", "test", n=40)][:8]
    examples = list({tuple(ex.ids[:3]): ex for ex in examples}.values())
    right = evaluate(PerfectModel(examples), examples, max_len=MAX_LEN)
    assert right.token_accuracy == 1.0 and right.answer_correct.all()
    wrong = evaluate(PerfectModel(examples, wrong_answer=True), examples, max_len=MAX_LEN)
    assert not wrong.answer_correct.any() and wrong.token_accuracy < 1.0
    assert right.first_answer_correct.all() and not wrong.first_answer_correct.any()
    assert (right.first_answer_accuracy, wrong.first_answer_accuracy) == (1.0, 0.0)
    assert right.trace_accuracy == 1.0 and wrong.trace_accuracy < 1.0
    # the trace targets: from the space ending the input to EOS (lengths - 1 targets, of which the ones up to and
    # including that space are the BOS-"Input:"-bits prefix)
    starts = [ex.ids.index(TOKENIZER.encode(" ")[0]) for ex in examples]
    np.testing.assert_array_equal(right.trace_count, [len(ex.ids) - 1 - s for ex, s in zip(examples, starts)])
    np.testing.assert_array_equal(wrong.trace_count - wrong.trace_correct, 1)  # only the wrong answer token


def test_faithful_layout_teacher_forced_first_answer_and_channel_mean_entropy() -> None:
    """The original's mixed test split, filtered as it was, in its layout (63 positions); the channel-mean state
    is asked for and turned into the original's entropy in bits."""
    split = make_split("parity", "test", n=60, protocol="faithful")
    examples = list({tuple(ex.ids[:3]): ex for ex in (split[i] for i in first_answer_in(split))}.values())[:10]
    model = PerfectModel(examples, n_state=4)
    ev = evaluate(model, examples, max_len=64, protocol="faithful")
    assert ev.entropy.shape == (len(examples), 63) and ev.first_answer_accuracy == 1.0
    assert ev.has_channel_mean
    want = energy_entropy_bits(np.minimum(np.arange(63)[:, None] >= np.arange(4)[None, :], 1).astype(float))
    np.testing.assert_allclose(ev.channel_mean_entropy, np.broadcast_to(want, ev.entropy.shape), atol=1e-9)
    assert ev.channel_mean_entropy[0, -1] == pytest.approx(2.0, abs=1e-6)  # four equal entries: 2 bits
    assert (ev.halt_labels[~ev.halt_mask & (np.arange(63) > ev.result_pos[:, None])] == 1.0).all()  # PAD is 1
    assert not evaluate(PerfectModel(examples), examples, max_len=64, protocol="faithful").has_channel_mean


def test_prompt_is_bos_input_bits_space() -> None:
    ex = make_split("parity", "test", n=1)[0]
    bits = ex.text.split("Input:")[1].split(" ")[0]
    assert prompt_ids(ex) == TOKENIZER.encode(f"<BOS>Input:{bits} ")


def test_generation_stops_on_halt_token_and_counts_tokens_saved() -> None:
    prompt = TOKENIZER.encode("<BOS>Input:101 ")
    model = ScriptedModel("1^0=1 1^1=0 Result:0<HALT>0000", [prompt])
    gen = greedy_generate(model, [prompt], max_len=40, halt_threshold=0.95)[0]
    expected = prompt + TOKENIZER.encode("1^0=1 1^1=0 Result:0<HALT>")
    assert gen.ids == expected and gen.stop_reason == "halt" and gen.answer == "0"
    example = SimpleNamespace(answer="0")
    summary = summarize_generations([gen], [example], max_len=40, halt_threshold=0.95)
    assert summary.answer_accuracy == 1.0 and summary.halt_accuracy == 1.0
    assert summary.tokens_saved == 40 - len(expected)
    assert summary.tokens_saved_fraction == pytest.approx((40 - len(expected)) / (40 - len(prompt)))
    assert summary.stop_reasons == {"halt": 1, "eos": 0, "confidence": 0, "max_len": 0}


def test_generation_stops_on_confidence_and_on_max_len() -> None:
    prompt = TOKENIZER.encode("<BOS>Input:1 ")
    script = "1=1 Result:1<HALT>"
    # q exceeds the threshold at the token fed at position 5: the token chosen there is kept, then it stops
    confident = greedy_generate(ScriptedModel(script, [prompt], confident_at=5), [prompt], max_len=30)[0]
    assert confident.stop_reason == "confidence" and len(confident.ids) == 7
    capped = greedy_generate(ScriptedModel("1111111111", [prompt]), [prompt], max_len=8)[0]
    assert capped.stop_reason == "max_len" and len(capped.ids) == 8 and capped.answer is None
    summary = summarize_generations([capped], [SimpleNamespace(answer="1")], max_len=8, halt_threshold=0.95)
    assert summary.halt_accuracy == 0.0 and summary.answer_accuracy == 0.0 and summary.tokens_saved == 0


def test_generation_batches_prompts_of_different_lengths() -> None:
    prompts = [TOKENIZER.encode("<BOS>Input:1 "), TOKENIZER.encode("<BOS>Input:1011 ")]
    model = ScriptedModel("Result:1<HALT>", prompts)
    gens = greedy_generate(model, prompts, max_len=30)
    for prompt, gen in zip(prompts, gens):
        assert gen.ids == prompt + TOKENIZER.encode("Result:1<HALT>") and gen.answer == "1"


def test_free_generation_on_untrained_model_runs_and_bad_input_raises() -> None:
    examples = make_split("parity", "test", n=3)
    model = build_model("ssm", TOKENIZER.vocab_size, d_model=16, n_layers=1, d_state=4)
    summary, gens = free_generation(model, examples, max_len=MAX_LEN, batch_size=2)
    assert summary.n == 3 and len(gens) == 3 and sum(summary.stop_reasons.values()) == 3
    assert all(len(g.ids) <= MAX_LEN for g in gens)
    with pytest.raises(ValueError, match="max_len"):
        greedy_generate(model, [prompt_ids(examples[0])], max_len=1)
    with pytest.raises(ValueError, match="halt_threshold"):
        greedy_generate(model, [prompt_ids(examples[0])], max_len=MAX_LEN, halt_threshold=1.5)


@pytest.mark.parametrize("generated,answer", [
    ("1^0=1 1^1=0 Result:0<HALT>", "0"),       # the structured answer
    ("1^0=1 1^1=0 Result:<HALT>", "0"),        # no digit after Result: -> the last "=d"
    ("1^0=1 1^1=0 Result:7", "0"),             # a non-binary answer -> the last "=d"
    ("1^0 1^1 0", "0"),                        # no "=d" -> the last 0/1 after the input
    ("+++", None),                             # nothing to parse (the input's own digits are not read)
    ("Result:1 1^0=0", "1"),                   # the first Result:d wins over later steps
], ids=["result", "last-eq", "non-binary-result", "last-digit", "none", "first-result"])
def test_lenient_parse_cases(generated, answer) -> None:
    prompt = "<BOS>Input:101 "
    assert lenient_parity_answer(prompt + generated, prompt) == answer


def test_lenient_parse_counts_answers_the_strict_parse_misses() -> None:
    prompt = TOKENIZER.encode("<BOS>Input:101 ")
    gen = Generation(prompt + TOKENIZER.encode("1^0=1 1^1=0 Result:<HALT>"), len(prompt), "halt", "", 14)
    ex = SimpleNamespace(answer="0")
    assert answer_correct([gen], [ex]) == [False] and answer_correct([gen], [ex], parse="lenient") == [True]
    with pytest.raises(ValueError, match="^parse:"):
        answer_correct([gen], [ex], parse="loose")


def test_max_new_tokens_bounds_each_sequence() -> None:
    prompts = [TOKENIZER.encode("<BOS>Input:1 "), TOKENIZER.encode("<BOS>Input:1011 ")]
    gens = greedy_generate(ScriptedModel("1111111111111", prompts), prompts, max_len=60, max_new_tokens=5)
    assert [len(g.ids) - g.prompt_len for g in gens] == [5, 5] and {g.stop_reason for g in gens} == {"max_len"}
    assert ORIGINAL_MAX_NEW_TOKENS == 200
    with pytest.raises(ValueError, match="^max_new_tokens:"):
        greedy_generate(ScriptedModel("1", prompts), prompts, max_len=60, max_new_tokens=0)


def test_original_generation_set_pools_400_in_distribution_and_100_ood() -> None:
    examples = original_generation_examples()
    bits = [ex.meta["n_bits"] for ex in examples]
    assert len(examples) == 500 and [ex.meta["ood"] for ex in examples] == [False] * 400 + [True] * 100
    assert set(bits[:400]) == set(range(2, 9)) and set(bits[400:]) == {9, 10}
    assert examples[0].text.startswith("<BOS>Input:01011 ")  # the first draw of random.Random(2024)
    assert max(len(prompt_ids(ex)) for ex in examples) + ORIGINAL_MAX_NEW_TOKENS <= 256  # fits the 256 positions


def test_faithful_summary_and_both_definitions_of_one_evaluation() -> None:
    from pna.evaluate import definitions_side_by_side, faithful_summary

    split = make_split("parity", "test", n=60, protocol="faithful")
    examples = list({tuple(ex.ids[:3]): ex for ex in split}.values())[:12]
    ev = evaluate(PerfectModel(examples, n_state=4), examples, max_len=64, protocol="faithful")
    kept = first_answer_in(examples)
    assert 0 < len(kept) < len(examples)  # the mixed split holds answers that do not start with 0 or 1
    summary = faithful_summary(ev, kept)
    assert summary["n_analysed"] == len(kept) and summary["n_split"] == len(examples)
    assert summary["first_answer_accuracy"] == 1.0
    # the stub's halt logit is 0 everywhere: q = 0.5 never exceeds 0.5, so hr = L for every example, and the
    # entropy rises (never halves), so sc = L too: tau = 0, and the halt F1 has no predicted positive (F1 0)
    assert summary["tau"]["n_hr_default"] == summary["tau"]["n_sc_default"] == summary["n"] == len(kept)
    assert summary["tau"]["mean"] == 0.0 and summary["halt_f1"] == 0.0
    both = definitions_side_by_side(ev, n_boot=20).to_dict()
    assert both["faithful"]["n"] == len(examples) and both["corrected"]["tau"]["n_no_crossing"] == len(examples)
    no_state = evaluate(PerfectModel(examples), examples, max_len=64, protocol="faithful")
    with pytest.raises(ValueError, match="^evaluation:"):
        faithful_summary(no_state, kept)
    picked = no_state.subset(kept)  # a model without a channel-mean state (a Transformer) subsets too
    assert picked.n == len(kept) and not picked.has_channel_mean
    assert (picked.result_pos == no_state.result_pos[kept]).all()
    with pytest.raises(ValueError, match="^indices:"):
        ev.subset([len(examples)])


@pytest.mark.parametrize("protocol", ["corrected", "faithful"])
@pytest.mark.parametrize("task", ["parity", "sorting", "arithmetic"])
def test_trace_starts_at_the_space_that_ends_the_input(task, protocol) -> None:
    """The trace mask skips every input token, also the spaces inside the original's "Input:D B F" sorting."""
    from pna.masks import trace_start
    for ex in make_split(task, "test", n=5, protocol=protocol):
        start = int(trace_start(torch.tensor([ex.ids]))[0])
        input_text = ex.text.split("Input:")[1]
        first_step = next(i for i, ch in enumerate(input_text) if ch in "=<>")
        want = input_text[:first_step].rsplit(" ", 1)[0]  # the input, up to the space before the first step
        assert TOKENIZER.decode(ex.ids[:start]) == "<BOS>Input:" + want, ex.text
        assert ex.ids[start] == TOKENIZER.encode(" ")[0]
