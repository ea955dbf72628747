"""Tokenizer, task generators, splits, halt labels and loaders."""
from __future__ import annotations

import random
import re

import pytest
import torch

from pna.tasks import MAX_LEN, TASKS, example_from_text, halt_labels, make_loader, make_split
from pna.tasks.arithmetic import chain_text
from pna.tasks.parity import parity_text
from pna.tasks.sorting import bubble_sort_trace, sorting_text
from pna.tokenizer import TOKENIZER


def test_tokenizer_round_trip_and_word_tokens():
    text = "<BOS>Input:1011 1^0=1 Result:1<HALT><EOS><PAD>"
    ids = TOKENIZER.encode(text)
    assert TOKENIZER.decode(ids) == text
    assert ids[0] == TOKENIZER.bos_id and ids[1] == TOKENIZER.input_id
    assert TOKENIZER.result_id in ids and ids[-3:] == [TOKENIZER.halt_id, TOKENIZER.eos_id, TOKENIZER.pad_id]
    assert TOKENIZER.pad_id == 0
    assert len(TOKENIZER.encode("D>B swap")) == 5


def test_tokenizer_rejects_unknown_characters():
    with pytest.raises(ValueError, match="text: character '#'"):
        TOKENIZER.encode("Input:1#0")
    with pytest.raises(ValueError, match="ids: token id"):
        TOKENIZER.decode([TOKENIZER.vocab_size])


def test_parity_format():
    assert parity_text("1011") == "<BOS>Input:1011 1^0=1 1^1=0 0^1=1 Result:1<HALT><EOS>"
    assert parity_text("1") == "<BOS>Input:1 Result:1<HALT><EOS>"


def test_sorting_format_and_trace():
    assert sorting_text("CAB") == "<BOS>Input:CAB C>A swap C>B swap A<B keep Result:A B C<HALT><EOS>"
    assert sorting_text("AAB") == "<BOS>Input:AAB A=A keep A<B keep Result:A A B<HALT><EOS>"
    rng = random.Random(0)
    for _ in range(200):
        letters = "".join(rng.choice("ABCDEF") for _ in range(rng.randint(3, 6)))
        steps, result = bubble_sort_trace(letters)
        assert result == "".join(sorted(letters))
        arr = list(letters)  # replay the trace: it must describe a valid run of bubble sort
        for step in steps:
            x, rel, y, action = step[0], step[1], step[2], step[4:]
            assert rel == (">" if x > y else "=" if x == y else "<")
            assert action == ("swap" if x > y else "keep")
        assert len(steps) <= len(letters) * (len(letters) - 1) // 2


def test_arithmetic_chain_format():
    assert chain_text(3, [("+", 5), ("-", 2)]) == "<BOS>Input:3+5-2 3+5=8 8-2=6 Result:6<HALT><EOS>"


@pytest.mark.parametrize("task", TASKS)
def test_traces_recompute(task):
    for ex in make_split(task, "train", n=300, seed=7):
        body = ex.text.removeprefix("<BOS>Input:").split(" Result:")[0]
        if ex.meta["kind"] == "parity":
            bits = body.split(" ")[0]
            assert ex.answer == str(bits.count("1") % 2)
            acc = int(bits[0])
            for step, bit in zip(body.split(" ")[1:], bits[1:]):
                assert step == f"{acc}^{bit}={acc ^ int(bit)}"
                acc ^= int(bit)
        elif ex.meta["kind"] == "arithmetic":
            assert int(ex.answer) == eval(body)  # "a+b" / "a-b" with a, b in 0-99
        elif ex.meta["kind"] == "sorting":
            assert ex.answer == " ".join(sorted(body.split(" ")[0]))
        else:
            expression, *steps = body.split(" ")
            assert int(ex.answer) == eval(expression) and 0 <= int(ex.answer) <= 9
            values = [int(v) for v in re.findall(r"=(\d+)", " ".join(steps))]
            assert len(values) == ex.meta["n_ops"] and all(0 <= v <= 9 for v in values)


@pytest.mark.parametrize("task", TASKS)
def test_result_pos_points_at_result(task):
    for ex in make_split(task, "val", n=100):
        assert ex.ids[ex.result_pos] == TOKENIZER.result_id
        assert ex.ids[0] == TOKENIZER.bos_id and ex.ids[-2:] == [TOKENIZER.halt_id, TOKENIZER.eos_id]
        assert TOKENIZER.decode(ex.ids) == ex.text


def test_parity_mix_and_test_split():
    train = make_split("parity", "train", n=2000)
    share = sum(e.meta["kind"] == "parity" for e in train) / len(train)
    assert 0.66 < share < 0.74
    assert {e.meta["n_bits"] for e in train if e.meta["kind"] == "parity"} == set(range(2, 9))
    assert all(e.meta["kind"] == "parity" for e in make_split("parity", "test", n=300))
    ood = make_split("parity", "test", n=200, min_bits=9, max_bits=10)
    assert {e.meta["n_bits"] for e in ood} == {9, 10}


def test_default_sizes_and_determinism():
    a, b = make_split("sorting", "val"), make_split("sorting", "val")
    assert len(a) == 1000 and [e.text for e in a] == [e.text for e in b]
    assert [e.text for e in make_split("sorting", "val", seed=1, n=50)] != [e.text for e in a[:50]]
    assert [e.text for e in make_split("sorting", "test", n=50)] != [e.text for e in a[:50]]


@pytest.mark.parametrize("task,kwargs", [("parity", {"min_bits": 8}), ("sorting", {"min_letters": 6}),
                                         ("arithmetic", {"min_ops": 8, "max_ops": 8})])
def test_longest_examples_fit(task, kwargs):
    longest = max(len(e.ids) for e in make_split(task, "test", n=300, **kwargs))
    assert longest <= MAX_LEN[task]


def test_bad_arguments():
    with pytest.raises(ValueError, match="^task:"):
        make_split("chess", "train")
    with pytest.raises(ValueError, match="^split:"):
        make_split("parity", "dev")
    with pytest.raises(ValueError, match="^task_kwargs:"):
        make_split("parity", "train", max_ops=3)
    with pytest.raises(ValueError, match="^text:"):
        example_from_text("<BOS>Input:1<EOS>")


def test_halt_labels():
    assert halt_labels(8, 5) == [0, 0, 0, 0.5, 0.5, 1, 1, 1]
    assert halt_labels(3, 1) == [0.5, 1, 1]


def test_loader_fields():
    examples = make_split("parity", "test", n=5)
    batch = next(iter(make_loader(examples, batch_size=5, shuffle=False, seed=0, max_len=64)))
    ex, ids = examples[0], batch["input_ids"][0]
    n = len(ex.ids)
    assert batch["input_ids"].shape == (5, 64) and ids[:n].tolist() == ex.ids
    assert (ids[n:] == TOKENIZER.pad_id).all()
    assert batch["targets"][0, : n - 1].tolist() == ex.ids[1:] and (batch["targets"][0, n - 1 :] == -100).all()
    halt = ex.ids.index(TOKENIZER.halt_id)
    assert batch["halt_mask"][0].tolist() == [t <= halt for t in range(64)]
    assert batch["halt_labels"][0].tolist() == halt_labels(64, ex.result_pos)
    assert batch["result_pos"][0] == ex.result_pos and batch["lengths"][0] == n


def test_loader_shuffle_is_seeded_and_too_long_rejected():
    examples = make_split("sorting", "val", n=40)

    def order(seed):
        return torch.cat([b["result_pos"] * 1000 + b["lengths"] for b in
                          make_loader(examples, 8, shuffle=True, seed=seed, max_len=128)]).tolist()

    assert order(0) == order(0) and order(0) != order(1)
    with pytest.raises(ValueError, match="^max_len:"):
        make_loader(examples, 8, shuffle=False, seed=0, max_len=10)
