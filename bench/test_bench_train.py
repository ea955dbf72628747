"""Training throughput of the paper-sized models on the CPU: one optimizer step (forward, thermodynamic loss,
backward, gradient clipping, AdamW) on a batch of 32 parity examples of 64 tokens.

Run with `pytest bench/test_bench_train.py --benchmark-only`; extra_info["tokens_per_s"] holds batch * L / median
step time. Rows: the default SSM (~5.0M parameters, fused op with backend="auto", i.e. the fastest CPU path), the
original "faithful" SSM (~5.1M, the vectorised PyTorch scan, since its halt head reads every state) and the
Transformer baseline (~5.0M).
"""
from __future__ import annotations

import pytest
import torch

from pna.loss import thermodynamic_loss
from pna.models import build_model
from pna.tasks import MAX_LEN, make_loader, make_split
from pna.tokenizer import TOKENIZER

BATCH = 32
MODELS = (("ssm", "default"), ("ssm", "faithful"), ("transformer", "default"))


@pytest.mark.parametrize("arch,variant", MODELS, ids=[f"{a}-{v}" for a, v in MODELS])
def test_training_step_throughput(measure, arch, variant):
    torch.manual_seed(0)
    batch = next(iter(make_loader(make_split("parity", "train", n=BATCH), BATCH, False, 0, MAX_LEN["parity"])))
    model = build_model(arch, TOKENIZER.vocab_size, variant).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)

    def step() -> None:
        out = model(batch["input_ids"])
        loss, _ = thermodynamic_loss(out.logits, out.halt_logits, out.entropy, batch, alpha=0.05, beta=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    step()  # warm-up: builds or loads the CPU kernels
    measure(step, shape=f"train-b{BATCH}-L{batch['input_ids'].shape[1]}", mode="step",
            backend=f"{arch}-{variant}", tokens=batch["input_ids"].numel())
