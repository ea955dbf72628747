"""The faithful protocol's training side: TrainConfig.data_protocol lays the splits out as the original did (its
generators, max_len - 1 positions, PAD labelled 1), so that with loss_mode "faithful" the validation total is the
original's checkpoint rule (CE + beta * BCE over all positions), and the original Transformer variant trains."""
from __future__ import annotations

import pytest
import torch

from pna.loss import thermodynamic_loss
from pna.tasks import ORIGINAL_MAX_LEN, make_split
from pna.tokenizer import TOKENIZER
from pna.train import TrainConfig, evaluate_metrics, train


@pytest.mark.parametrize("task", ["parity", "sorting", "arithmetic"])
def test_faithful_data_protocol_uses_the_original_layout(task: str) -> None:
    cfg = TrainConfig(task=task, data_protocol="faithful", batch_size=8)
    examples = cfg.split("val", 8)
    assert [e.text for e in examples] == [e.text for e in make_split(task, "val", n=8, protocol="faithful")]
    batch = next(iter(cfg.loader(examples, False, 0)))
    assert batch["input_ids"].shape[1] == ORIGINAL_MAX_LEN[task] - 1
    pad = batch["input_ids"] == TOKENIZER.pad_id
    assert pad.any() and (batch["halt_labels"][pad] == 1).all()


def test_faithful_validation_total_is_ce_plus_beta_bce_over_all_positions(tmp_path) -> None:
    """The checkpoint rule: val_loss_total of an E_ssm-like run equals CE + 0.1 * the mean BCE over every position
    (PAD labelled 1), recomputed here by hand on the same model and split."""
    cfg = TrainConfig(task="parity", variant="faithful", data_protocol="faithful", loss_mode="faithful", alpha=0.0,
                      beta=0.1, tiny=True, n_train=16, n_val=8, max_epochs=1, batch_size=8, quiet=True, bf16=False,
                      out_dir=str(tmp_path / "run"))
    result = train(cfg)
    batch = next(iter(cfg.loader(cfg.split("val", 8), False, cfg.seed)))
    result.model.eval()
    with torch.no_grad():
        out = result.model(batch["input_ids"])
    ce = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), batch["targets"].flatten(), ignore_index=-100)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out.halt_logits, batch["halt_labels"].float())
    metrics = evaluate_metrics(result.model, cfg.loader(cfg.split("val", 8), False, cfg.seed), cfg,
                               torch.device("cpu"))
    assert metrics["loss_total"] == pytest.approx(float(ce + 0.1 * bce), rel=1e-5)
    assert result.best_val["val_loss_total"] == pytest.approx(metrics["loss_total"], rel=1e-5)
    _, parts = thermodynamic_loss(out.logits, out.halt_logits, out.entropy, batch, 0.0, 0.1, mode="faithful")
    assert parts["bce"] == pytest.approx(float(bce), rel=1e-5)


def test_faithful_transformer_variant_trains(tmp_path) -> None:
    cfg = TrainConfig(task="parity", arch="transformer", variant="faithful", data_protocol="faithful",
                      loss_mode="faithful", tiny=True, n_train=16, n_val=8, max_epochs=1, batch_size=8, quiet=True,
                      out_dir=str(tmp_path / "run"))
    result = train(cfg)
    assert result.model.cfg.dropout == 0.1 and result.model.cfg.head_bias
