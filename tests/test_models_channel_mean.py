"""The SSM's channel-mean output s_t = mean_d h_t[d, :] through the fused op: the faithful variant's halt head
gives what the former state-materialising torch path gave, decoding matches the full forward, and the default
variant returns s_t when asked."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pna.models import build_model
from pna.tokenizer import TOKENIZER
from pna_kernels.parallel import selective_scan_parallel

V = TOKENIZER.vocab_size
TINY = {"d_model": 32, "n_layers": 2, "d_state": 8}


def former_faithful_forward(model, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The faithful SSM as computed before the fused op had the channel mean: every state materialised by the
    vectorised torch scan (delta = 1, no softplus), s_t = states.mean over channels, the halt MLP on s_t."""
    length = ids.shape[1]
    x = model.embed(ids) + model.pos.weight[:length]
    halts = []
    for norm, block in zip(model.norms, model.blocks):
        h = norm(x)
        u, z = block.in_proj(h).chunk(2, dim=-1)
        u = F.silu(block.conv(u.transpose(1, 2))[..., :length].transpose(1, 2))
        delta, B, C = block._project(u)
        y, entropy, _, _, states = selective_scan_parallel(
            u.transpose(1, 2), delta.transpose(1, 2), -torch.exp(block.A_log.float()), B.transpose(1, 2),
            C.transpose(1, 2), block.D.float(), z.transpose(1, 2),
        )
        channel_mean = states.mean(dim=2)
        x = x + block.out_proj(y.transpose(1, 2))
        halts.append(model.halt_mlp(channel_mean).squeeze(-1))
    return {"logits": model.head(model.norm_f(x)), "layer_halt_logits": torch.stack(halts), "entropy": entropy,
            "channel_mean": channel_mean}


def test_faithful_halt_head_output_is_unchanged():
    """Forward outputs, and the gradients of a loss on the halt logits, s_t and the logits, of the faithful model
    equal the former torch path's."""
    torch.manual_seed(0)
    model = build_model("ssm", V, "faithful", **TINY)
    ids = torch.randint(1, V, (2, 19), generator=torch.Generator().manual_seed(1))
    new = model(ids)
    old = former_faithful_forward(model, ids)
    got = {"logits": new.logits, "layer_halt_logits": new.layer_halt_logits, "entropy": new.entropy,
           "channel_mean": new.channel_mean}
    for name, want in old.items():
        torch.testing.assert_close(got[name], want, rtol=1e-5, atol=1e-6, msg=name)
    params = [p for p in model.parameters() if p.requires_grad]
    new_loss = new.halt_logits.sum() + new.channel_mean.square().sum() + new.logits.square().mean()
    old_loss = old["layer_halt_logits"][-1].sum() + old["channel_mean"].square().sum() + old["logits"].square().mean()
    new_grads = torch.autograd.grad(new_loss, params)
    old_grads = torch.autograd.grad(old_loss, params)
    for (name, _), g, w in zip(model.named_parameters(), new_grads, old_grads):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("variant", ["default", "faithful"])
def test_decoding_matches_forward_with_channel_mean(variant):
    torch.manual_seed(0)
    model = build_model("ssm", V, variant, **TINY).eval()
    ids = torch.randint(1, V, (2, 21), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids, return_channel_mean=True)
    cache = model.init_cache(2)
    steps = [model.step(ids[:, t], cache) for t in range(ids.shape[1])]
    for name in ("logits", "halt_logits", "entropy", "channel_mean"):
        got = torch.stack([getattr(s, name) for s in steps], 1)
        torch.testing.assert_close(got, getattr(full, name), rtol=1e-4, atol=1e-5, msg=name)


def test_default_variant_channel_mean_only_when_asked():
    model = build_model("ssm", V, **TINY)
    ids = torch.randint(1, V, (3, 11), generator=torch.Generator().manual_seed(3))
    assert model(ids).channel_mean is None
    out = model(ids, return_channel_mean=True)
    assert out.channel_mean.shape == (3, 11, TINY["d_state"]) and out.channel_mean.dtype == torch.float32
    out.channel_mean.square().sum().backward()  # differentiable into the last layer and the trunk
    grads = dict(model.named_parameters())
    assert grads["blocks.1.A_log"].grad.abs().sum() > 0 and grads["embed.weight"].grad.abs().sum() > 0


def test_transformer_has_no_channel_mean():
    model = build_model("transformer", V, d_model=32, n_layers=2, n_heads=4)
    assert model(torch.ones(1, 5, dtype=torch.long)).channel_mean is None


def test_models_do_not_import_the_torch_backend_directly():
    """pna/ reaches the kernels through pna_kernels' public API only (the backend is chosen there)."""
    root = Path(__file__).resolve().parent.parent / "pna"
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if "pna_kernels.parallel" in p.read_text()]
    assert offenders == []
