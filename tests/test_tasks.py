"""Tokenizer, task generators, splits, halt labels and loaders."""
from __future__ import annotations

import random
import re

import pytest
import torch
import torch.distributed as dist

from pna.tasks import (MAX_LEN, ORIGINAL_MAX_LEN, TASKS, TaskDataset, example_from_text, first_answer_in, halt_labels,
                       make_loader, make_split)
from pna.tasks.arithmetic import chain_text
from pna.tasks.parity import parity_text, two_operand_text
from pna.tasks.partition import PARTITION_MIN_SIZE, split_of
from pna.tasks.sorting import bubble_sort_trace, sorting_text
from pna.tokenizer import TOKENIZER


def input_of(text: str) -> str:
    """The input of an example: the text between "Input:" and the first space."""
    return text.removeprefix("<BOS>Input:").split(" ")[0]


def test_tokenizer_round_trip_and_word_tokens():
    text = "<BOS>Input:1011 1^0=1 Result:1<HALT><EOS><PAD>"
    ids = TOKENIZER.encode(text)
    assert TOKENIZER.decode(ids) == text
    assert ids[0] == TOKENIZER.bos_id and ids[1] == TOKENIZER.input_id
    assert TOKENIZER.result_id in ids and ids[-3:] == [TOKENIZER.halt_id, TOKENIZER.eos_id, TOKENIZER.pad_id]
    assert TOKENIZER.pad_id == 0 and len(set(TOKENIZER.vocab)) == TOKENIZER.vocab_size
    assert len(TOKENIZER.encode("D>B swap")) == 5 and len(TOKENIZER.encode("A=A keep")) == 5


def test_any_id_sequence_decodes_unambiguously():
    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(TOKENIZER.vocab_size) for _ in range(rng.randint(1, 40))]
        assert TOKENIZER.encode(TOKENIZER.decode(ids)) == ids


def test_tokenizer_rejects_unknown_characters_and_ids():
    with pytest.raises(ValueError, match="text: character '#'"):
        TOKENIZER.encode("Input:1#0")
    with pytest.raises(ValueError, match="text: character 's' at position 4"):
        TOKENIZER.encode("A<B s")  # "swap" and "keep" are words; their letters alone are not tokens
    for bad in (TOKENIZER.vocab_size, -100):
        with pytest.raises(ValueError, match=f"ids: token id {bad} "):
            TOKENIZER.decode([1, bad])


def test_formats():
    assert parity_text("1011") == "<BOS>Input:1011 1^0=1 1^1=0 0^1=1 Result:1<HALT><EOS>"
    assert parity_text("1") == "<BOS>Input:1 Result:1<HALT><EOS>"
    assert two_operand_text("37+45") == "<BOS>Input:37+45 Result:82<HALT><EOS>"
    assert two_operand_text("12-45") == "<BOS>Input:12-45 Result:-33<HALT><EOS>"
    assert sorting_text("CAB") == "<BOS>Input:CAB C>A swap C>B swap A<B keep Result:A B C<HALT><EOS>"
    assert sorting_text("AAB") == "<BOS>Input:AAB A=A keep A<B keep Result:A A B<HALT><EOS>"
    assert chain_text("3+5-2") == "<BOS>Input:3+5-2 3+5=8 8-2=6 Result:6<HALT><EOS>"


def test_split_strings_for_a_fixed_seed():
    texts = {task: [e.text for e in make_split(task, "train", n=2, seed=0)] for task in TASKS}
    assert texts["parity"] == [
        "<BOS>Input:97-5 Result:92<HALT><EOS>",
        "<BOS>Input:111110 1^1=0 0^1=1 1^1=0 0^1=1 1^0=1 Result:1<HALT><EOS>",
    ]
    assert texts["sorting"][1] == (
        "<BOS>Input:CEFE C<E keep E<F keep F>E swap C<E keep E=E keep Result:C E E F<HALT><EOS>"
    )
    assert texts["arithmetic"] == [
        "<BOS>Input:6+0-0-4+7-5 6+0=6 6-0=6 6-4=2 2+7=9 9-5=4 Result:4<HALT><EOS>",
        "<BOS>Input:7-2-4+3-2 7-2=5 5-4=1 1+3=4 4-2=2 Result:2<HALT><EOS>",
    ]


def test_bad_task_inputs():
    for fn, bad, name in ((parity_text, "102", "bits"), (sorting_text, "AG", "letters"),
                          (sorting_text, "A", "letters"), (chain_text, "3+15", "expression"),
                          (two_operand_text, "100+1", "expression")):
        with pytest.raises(ValueError, match=f"^{name}:"):
            fn(bad)


@pytest.mark.parametrize("task", TASKS)
def test_traces_recompute(task):
    """Parse every trace back and recompute it step by step."""
    for ex in make_split(task, "train", n=300, seed=7):
        body = ex.text.removeprefix("<BOS>Input:").removesuffix(f"Result:{ex.answer}<HALT><EOS>").strip()
        given, *steps = body.split(" ")
        kind = ex.meta["kind"]
        if kind == "parity":
            assert len(given) == ex.meta["n_bits"] and len(steps) == len(given) - 1
            acc = int(given[0])
            for step, bit in zip(steps, given[1:]):
                assert step == f"{acc}^{bit}={acc ^ int(bit)}"
                acc ^= int(bit)
            assert ex.answer == str(acc) == str(given.count("1") % 2)
        elif kind == "two_operand":
            a, op, b = re.fullmatch(r"(\d+)([+-])(\d+)", given).groups()
            assert not steps and int(ex.answer) == (int(a) + int(b) if op == "+" else int(a) - int(b))
            assert 0 <= int(a) <= 99 and 0 <= int(b) <= 99
        elif kind == "sorting":
            arr, pairs = list(given), iter(zip(steps[0::2], steps[1::2]))
            for end in range(len(arr) - 1, 0, -1):  # replay bubble sort with early exit against the trace
                swapped = False
                for j in range(end):
                    x, y = arr[j], arr[j + 1]
                    rel, action = (">", "swap") if x > y else ("=" if x == y else "<", "keep")
                    assert next(pairs) == (f"{x}{rel}{y}", action)
                    if action == "swap":
                        arr[j], arr[j + 1], swapped = y, x, True
                if not swapped:
                    break
            assert next(pairs, None) is None and len(given) == ex.meta["n_letters"]
            assert ex.answer == " ".join(arr) == " ".join(sorted(given))
        else:
            acc = int(given[0])
            assert len(steps) == ex.meta["n_ops"] == (len(given) - 1) // 2
            for step, op, d in zip(steps, given[1::2], given[2::2]):
                new = acc + int(d) if op == "+" else acc - int(d)
                assert step == f"{acc}{op}{d}={new}" and 0 <= new <= 9
                acc = new
            assert ex.answer == str(acc)


def test_bubble_sort_replays_exactly():
    """The trace is the exact comparison sequence of bubble sort with early exit."""
    assert len(bubble_sort_trace("FEDCBA")[0]) == 15  # worst case: every pass runs
    assert len(bubble_sort_trace("ABCDEF")[0]) == 5  # sorted: one pass, no swap
    assert bubble_sort_trace("BAC") == (["B>A swap", "B<C keep", "A<B keep"], "ABC")


@pytest.mark.parametrize("task", TASKS)
def test_result_pos_points_at_result(task):
    for ex in make_split(task, "val", n=100):
        assert ex.ids[ex.result_pos] == TOKENIZER.result_id
        assert ex.ids[0] == TOKENIZER.bos_id and ex.ids[-2:] == [TOKENIZER.halt_id, TOKENIZER.eos_id]
        assert TOKENIZER.decode(ex.ids) == ex.text and ex.text.endswith(f"Result:{ex.answer}<HALT><EOS>")


def test_parity_mix_and_ood():
    train = make_split("parity", "train", n=2000)
    share = sum(e.meta["kind"] == "parity" for e in train) / len(train)
    assert 0.66 < share < 0.74
    assert {e.meta["n_bits"] for e in train if e.meta["kind"] == "parity"} == set(range(2, 9))
    assert {e.meta["op"] for e in train if e.meta["kind"] == "two_operand"} == {"+", "-"}
    assert all(e.meta["kind"] == "parity" for e in make_split("parity", "test", n=300))
    ood = make_split("parity", "test", n=200, min_bits=9, max_bits=10)
    assert {e.meta["n_bits"] for e in ood} == {9, 10}


def test_default_sizes_and_determinism():
    a, b = make_split("sorting", "val"), make_split("sorting", "val")
    assert len(a) == 1000 and [e.text for e in a] == [e.text for e in b]
    assert [e.text for e in make_split("sorting", "val", seed=1, n=50)] != [e.text for e in a[:50]]
    assert [e.text for e in make_split("sorting", "test", n=50)] != [e.text for e in a[:50]]


@pytest.mark.parametrize("task,size", [("sorting", lambda m: 6 ** m["n_letters"]),
                                       ("arithmetic", lambda m: 10 * 11 ** m["n_ops"])])
def test_splits_share_no_input_of_a_partitioned_stratum(task, size):
    splits = {s: make_split(task, s, n=2000 if s == "train" else 500) for s in ("train", "val", "test")}
    inputs = {}
    for split, examples in splits.items():
        big = [e for e in examples if size(e.meta) >= PARTITION_MIN_SIZE]
        assert len(big) > len(examples) // 2
        assert all(split_of(task, input_of(e.text)) == split for e in big)
        inputs[split] = {input_of(e.text) for e in big}
    assert not inputs["train"] & inputs["val"] and not inputs["train"] & inputs["test"]
    assert not inputs["val"] & inputs["test"]


def test_two_operand_inputs_are_disjoint_between_train_and_val():
    def two_operand(split):
        return {input_of(e.text) for e in make_split("parity", split, n=1500) if e.meta["kind"] == "two_operand"}

    train, val = two_operand("train"), two_operand("val")
    assert len(train) > 300 and len(val) > 300 and not train & val


def test_split_assignment_shares():
    owners = [split_of("sorting", f"{i:06d}") for i in range(20000)]
    for split, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(owners.count(split) / len(owners) - share) < 0.01


def test_longest_examples_fit():
    assert len(TOKENIZER.encode(parity_text("1" * 8))) == 57 <= MAX_LEN["parity"]
    assert len(TOKENIZER.encode(parity_text("1" * 9))) == 64
    assert len(TOKENIZER.encode(parity_text("1" * 10))) == 71  # OOD 10 bits needs a longer padding
    assert len(TOKENIZER.encode(sorting_text("FEDCBA"))) == 113 <= MAX_LEN["sorting"]
    assert len(TOKENIZER.encode(chain_text("1+1+1+1+1+1+1+1+1"))) == 72 <= MAX_LEN["arithmetic"]
    for task in TASKS:
        for split in ("train", "test"):
            assert max(len(e.ids) for e in make_split(task, split)) <= MAX_LEN[task]


def test_bad_arguments():
    with pytest.raises(ValueError, match="^task:"):
        make_split("chess", "train")
    with pytest.raises(ValueError, match="^split:"):
        make_split("parity", "dev")
    with pytest.raises(ValueError, match="^task_kwargs:"):
        make_split("parity", "train", max_ops=3)
    with pytest.raises(ValueError, match="^task_kwargs:"):
        make_split("parity", "train", min_bits=9, max_bits=8)
    with pytest.raises(ValueError, match="^task_kwargs:"):
        make_split("sorting", "train", min_letters=1)
    with pytest.raises(ValueError, match="^task_kwargs:"):
        make_split("parity", "train", parity_share=1.5)
    with pytest.raises(ValueError, match="^n:"):
        make_split("parity", "train", n=-1)
    with pytest.raises(ValueError, match="^text:"):
        example_from_text("<BOS>Input:1<HALT><EOS>")
    with pytest.raises(ValueError, match="^text:"):
        example_from_text("Input:1 Result:1<HALT><EOS>")
    with pytest.raises(ValueError, match="^text:"):
        example_from_text("<BOS>Input:1<PAD> Result:1<HALT><EOS>")


def test_halt_labels():
    assert halt_labels(8, 5) == [0, 0, 0, 0.5, 0.5, 1, 1, 1]
    with pytest.raises(ValueError, match="^result_pos:"):
        halt_labels(5, 5)


def test_halt_labels_around_result_in_real_examples():
    examples = make_split("arithmetic", "test", n=20)
    batch = next(iter(make_loader(examples, batch_size=20, shuffle=False, seed=0, max_len=72)))
    for labels, rp in zip(batch["halt_labels"], batch["result_pos"]):
        assert labels[rp - 3 : rp + 1].tolist() == [0.0, 0.5, 0.5, 1.0]
        assert (labels[: rp - 2] == 0).all()


def test_loader_fields():
    examples = make_split("parity", "test", n=5)
    batch = next(iter(make_loader(examples, batch_size=5, shuffle=False, seed=0, max_len=64)))
    for b, ex in enumerate(examples):
        ids, n = batch["input_ids"][b], len(ex.ids)
        assert batch["input_ids"].shape == (5, 64) and ids[:n].tolist() == ex.ids
        assert (ids[n:] == TOKENIZER.pad_id).all()
        assert batch["targets"][b, : n - 1].tolist() == ex.ids[1:] and (batch["targets"][b, n - 1 :] == -100).all()
        halt = ex.ids.index(TOKENIZER.halt_id)
        assert halt == n - 2 and batch["halt_mask"][b].tolist() == [t <= halt for t in range(64)]
        assert batch["halt_labels"][b, :n].tolist() == halt_labels(n, ex.result_pos)
        assert (batch["halt_labels"][b, n:] == 0).all()
        assert batch["result_pos"][b] == ex.result_pos and batch["lengths"][b] == n
    assert batch["halt_labels"].dtype == torch.float32 and batch["halt_mask"].dtype == torch.bool


def test_loader_shuffle_is_seeded_and_too_long_rejected():
    examples = make_split("sorting", "val", n=40)

    def order(seed):
        return [TOKENIZER.decode(row[:n]) for b in make_loader(examples, 8, shuffle=True, seed=seed, max_len=128)
                for row, n in zip(b["input_ids"], b["lengths"])]

    assert order(0) == order(0) and order(0) != order(1)
    assert sorted(order(0)) == sorted(e.text for e in examples)
    with pytest.raises(ValueError, match="^max_len:"):
        make_loader(examples, 8, shuffle=False, seed=0, max_len=10)
    with pytest.raises(ValueError, match="^examples:"):
        make_loader([], 8, shuffle=False, seed=0, max_len=128)
    with pytest.raises(ValueError, match="^batch_size:"):
        make_loader(examples, 0, shuffle=False, seed=0, max_len=128)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_distributed_loader_uses_a_distributed_sampler(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        loader = make_loader(make_split("parity", "val", n=10), 4, shuffle=True, seed=3, max_len=64, distributed=True)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        assert sum(len(b["lengths"]) for b in loader) == 10
    finally:
        dist.destroy_process_group()


# ---- the faithful protocol: the original's generators, draw for draw ----

def test_faithful_formats_follow_the_original():
    """Two-operand arithmetic carries its worked step; sorting letters are spaced; chains start 1-9."""
    mixed = make_split("parity", "train", n=200, protocol="faithful")
    arith = [e for e in mixed if e.meta["kind"] == "two_operand"]
    assert arith and all(re.fullmatch(r"<BOS>Input:(\d+[+-]\d+) \1=(-?\d+) Result:\2<HALT><EOS>", e.text)
                         for e in arith)
    sorting = make_split("sorting", "test", n=50, protocol="faithful")
    assert all(re.match(r"<BOS>Input:[A-F]( [A-F]){2,5} [A-F][<>=][A-F] (swap|keep)", e.text) for e in sorting)
    chains = make_split("arithmetic", "test", n=300, protocol="faithful")
    starts = {int(re.match(r"<BOS>Input:(\d)", e.text)[1]) for e in chains}
    values = [int(v) for e in chains for v in re.findall(r"=(\d+)", e.text)]
    assert starts == set(range(1, 10)) and min(values) == 0 and max(values) > 9
    assert {e.meta["n_ops"] for e in chains} == set(range(2, 9))


def test_faithful_test_split_filtered_to_first_answer_0_or_1_is_the_originals_n_791():
    """The original's mixed 70/30 test split (seed 456) kept 791 examples: 703 parity + 88 arithmetic."""
    test = make_split("parity", "test", protocol="faithful")
    kept = [test[i] for i in first_answer_in(test)]
    kinds = [e.meta["kind"] for e in kept]
    assert len(test) == 1000 and len(kept) == 791
    assert kinds.count("parity") == 703 and kinds.count("two_operand") == 88
    assert all(e.answer[0] in "01" for e in kept)
    # the corrected test split stays pure parity
    assert {e.meta["kind"] for e in make_split("parity", "test", n=100)} == {"parity"}


def test_faithful_chain_test_split_truncation_rates():
    """The original padded/truncated chains to 64 tokens: on its 2-8-operation test split 26.4% of examples are
    truncated and 22.4% lose "Result:" from the 63 positions the model reads (their rp is clamped to 62)."""
    chains = make_split("arithmetic", "test", protocol="faithful")
    data = TaskDataset(chains, ORIGINAL_MAX_LEN["arithmetic"], "faithful")
    truncated = sum(len(e.ids) > 64 for e in chains)
    lost = int((data.input_ids == TOKENIZER.result_id).any(dim=1).logical_not().sum())
    assert (truncated, lost) == (264, 224)
    assert data.input_ids.shape == (1000, 63) and int(data.result_pos.max()) == 62


def test_faithful_layout_labels_pad_as_one_and_reads_max_len_minus_one_positions():
    ex = example_from_text(parity_text("10"))  # <BOS> Input: 1 0 ' ' 1 ^ 0 = 1 ' ' Result: 1 <HALT> <EOS>
    assert ex.result_pos == 11 and len(ex.ids) == 15
    faithful = TaskDataset([ex], 17, "faithful")[0]
    corrected = TaskDataset([ex], 17)[0]
    assert faithful["input_ids"].shape == (16,) and corrected["input_ids"].shape == (17,)
    want = [0.0] * 9 + [0.5, 0.5] + [1.0] * 5  # 1 from rp on, through HALT, EOS and the PAD position
    assert faithful["halt_labels"].tolist() == want
    assert corrected["halt_labels"].tolist() == want[:15] + [0.0, 0.0]
    assert faithful["targets"].tolist() == corrected["targets"].tolist()[:16]
    assert faithful["halt_mask"].tolist() == corrected["halt_mask"].tolist()[:16]


def test_protocol_is_checked():
    with pytest.raises(ValueError, match="^protocol:"):
        make_split("parity", "test", n=2, protocol="original")
    with pytest.raises(ValueError, match="^protocol:"):
        TaskDataset(make_split("parity", "test", n=2), 64, "original")
