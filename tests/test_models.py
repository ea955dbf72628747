"""Models: parameter counts, per-layer entropy/halt outputs, token-by-token decoding == the full forward."""
from __future__ import annotations

import pytest
import torch

from pna.models import build_model
from pna.tokenizer import ORIGINAL_TOKENIZER, TOKENIZER

V = TOKENIZER.vocab_size
TINY = {"ssm": {"d_model": 32, "n_layers": 2, "d_state": 8},
        "transformer": {"d_model": 32, "n_layers": 2, "n_heads": 4}}


def faithful_count(vocab: int, d: int = 512, layers: int = 6, n: int = 16, k: int = 4, max_len: int = 256) -> int:
    """The original SSM's parameters written out by hand: per layer LayerNorm, W_in (d -> 2d, bias), depthwise
    conv (+bias), W_x (d -> 2N: B and C, no dt, bias), A_log, D, W_out (d -> d, bias); token and position
    embeddings, final LayerNorm, LM head (+bias); the halt MLP N -> 64 -> 1."""
    layer = 2 * d + (d * 2 * d + 2 * d) + (d * k + d) + (d * 2 * n + 2 * n) + d * n + d + (d * d + d)
    return vocab * d + max_len * d + layers * layer + 2 * d + (d * vocab + vocab) + (n * 64 + 64 + 64 + 1)


def faithful_transformer_count(vocab: int, d: int = 320, layers: int = 4, ff: int = 4, max_len: int = 256) -> int:
    """The original Transformer's parameters by hand: per layer two LayerNorms, attention in/out projections with
    biases, the feed-forward d -> ff*d -> d with biases; embeddings, final LayerNorm, LM head with bias, the halt
    MLP d -> 64 -> 1."""
    layer = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * ff * d + ff * d) + (ff * d * d + d)
    return vocab * d + max_len * d + layers * layer + 2 * d + (d * vocab + vocab) + (d * 64 + 64 + 64 + 1)


@pytest.mark.parametrize("arch,count", [("ssm", 5_058_906), ("transformer", 5_051_034)],
                         ids=["faithful-ssm", "faithful-transformer"])
def test_faithful_parameter_counts_at_the_original_vocabulary(arch, count):
    """At the original's 25-token vocabulary both faithful variants have exactly the original's reported counts."""
    assert ORIGINAL_TOKENIZER.vocab_size == 25
    by_hand = {"ssm": faithful_count, "transformer": faithful_transformer_count}[arch](25)
    assert build_model(arch, ORIGINAL_TOKENIZER.vocab_size, "faithful").num_parameters() == by_hand == count


def test_faithful_transformer_dropout_acts_only_in_training():
    model = build_model("transformer", V, "faithful", d_model=32, n_layers=2, n_heads=4)
    ids = torch.randint(1, V, (2, 9), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    train_a, train_b = model.train()(ids).logits, model(ids).logits
    eval_a, eval_b = model.eval()(ids).logits, model(ids).logits
    assert not torch.equal(train_a, train_b) and torch.equal(eval_a, eval_b)


def test_parameter_counts():
    """The documented sizes, at the shared vocabulary's 31 tokens (each count moves by 2 * d_model per token)."""
    ssm = build_model("ssm", 31).num_parameters()
    transformer = build_model("transformer", 31).num_parameters()
    faithful = build_model("ssm", 31, "faithful").num_parameters()
    print(f"\nparameters (31 tokens): ssm {ssm:,}  transformer {transformer:,}  faithful ssm {faithful:,}")
    assert ssm == 4_960_267
    assert transformer == 4_993_601
    assert faithful == faithful_count(31) == 5_065_056
    # With a 25-token vocabulary the reconstructed faithful variant has exactly the original's reported count.
    assert build_model("ssm", 25, "faithful").num_parameters() == faithful_count(25) == 5_058_906


ARCH_VARIANTS = [("ssm", "default"), ("ssm", "faithful"), ("transformer", "default"), ("transformer", "faithful")]


@pytest.mark.parametrize("arch,variant", ARCH_VARIANTS, ids=["-".join(p) for p in ARCH_VARIANTS])
def test_every_layer_yields_entropy_and_halt(arch, variant):
    model = build_model(arch, V, variant, **TINY[arch])
    ids = torch.randint(1, V, (3, 17), generator=torch.Generator().manual_seed(0))
    out = model(ids)
    assert out.logits.shape == (3, 17, V)
    assert out.halt_logits.shape == out.entropy.shape == (3, 17)
    assert out.layer_entropy.shape == out.layer_halt_logits.shape == (2, 3, 17)
    assert torch.equal(out.entropy, out.layer_entropy[-1])
    assert torch.isfinite(out.entropy).all() and (out.entropy >= 0).all()
    out.halt_logits.sum().backward()  # the model's halt logit is differentiable in its own head and the trunk
    head = {("ssm", "default"): "blocks.1.halt_weight", ("ssm", "faithful"): "halt_mlp.0.weight",
            ("transformer", "default"): "halt_head.weight", ("transformer", "faithful"): "halt_head.0.weight"}[arch, variant]
    params = dict(model.named_parameters())
    assert params[head].grad.abs().sum() > 0 and params["embed.weight"].grad.abs().sum() > 0


@pytest.mark.parametrize("arch,variant", ARCH_VARIANTS, ids=["-".join(p) for p in ARCH_VARIANTS])
def test_decoding_step_by_step_matches_forward(arch, variant):
    torch.manual_seed(0)
    model = build_model(arch, V, variant, **TINY[arch]).eval()
    ids = torch.randint(1, V, (2, 21), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids)
    cache = model.init_cache(2)
    steps = [model.step(ids[:, t], cache) for t in range(ids.shape[1])]
    for name, got, want in (("logits", torch.stack([s.logits for s in steps], 1), full.logits),
                            ("halt", torch.stack([s.halt_logits for s in steps], 1), full.halt_logits),
                            ("entropy", torch.stack([s.entropy for s in steps], 1), full.entropy)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)


def test_bad_arguments():
    with pytest.raises(ValueError, match="^arch:"):
        build_model("rnn", V)
    with pytest.raises(ValueError, match="^variant:"):
        build_model("transformer", V, "original")
    with pytest.raises(ValueError, match="^halt_hidden:"):
        build_model("transformer", V, halt_hidden=-1)
    with pytest.raises(ValueError, match="^overrides:"):
        build_model("ssm", V, d_modle=8)
    with pytest.raises(ValueError, match="^input_ids:"):
        build_model("ssm", V, **TINY["ssm"])(torch.zeros(1, 129, dtype=torch.long))
