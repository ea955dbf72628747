"""Training throughput of the paper-sized models on the CPU: one optimizer step (forward, thermodynamic loss,
backward, gradient clipping, AdamW) on a batch of 32 parity examples of 64 tokens.

Run with `pytest bench/test_bench_train.py --benchmark-only`; extra_info["tokens_per_s"] holds batch * L / median
step time. Rows: the Transformer baseline (~5.0M parameters), the default SSM (~5.0M, fused op with
backend="auto", i.e. the fastest CPU path) and the original "faithful" SSM (~5.1M, the same fused op with the
channel-mean output its halt head reads). Each SSM row also records its median step time over that of its
baseline row measured earlier in the same run (extra_info["time_ratio"], printed beside the row in the summary):
the default SSM over the Transformer, the faithful SSM over the default SSM. Ratios are taken within one run
because on a shared machine absolute times drift between runs.
"""
from __future__ import annotations

import pytest
import torch

from pna.loss import thermodynamic_loss
from pna.models import build_model
from pna.tasks import MAX_LEN, make_loader, make_split
from pna.tokenizer import TOKENIZER

BATCH = 32
MODELS = (("transformer", "default"), ("ssm", "default"), ("ssm", "faithful"))  # each baseline before its ratio
BASELINE = {"ssm-default": "transformer-default", "ssm-faithful": "ssm-default"}


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
    name = f"{arch}-{variant}"
    measure(step, shape=f"train-b{BATCH}-L{batch['input_ids'].shape[1]}", mode="step", backend=name,
            tokens=batch["input_ids"].numel(), baseline=BASELINE.get(name))
