"""Cross-task transfer of the halt detector: parity-trained model -> arithmetic chains.

1. Zero-shot: evaluate the parity checkpoint on the arithmetic test split and score its halt head.
2. Adapted: freeze the halt head (every parameter whose name contains "halt") and fine-tune the rest with
   cross-entropy only (the thermodynamic loss with alpha = beta = 0) on the trainer's own loop (pna.train),
   with TransferSettings (default the original's: Adam lr 1e-4, no weight decay, at most 20 epochs, early
   stopping on validation token accuracy with patience 5), keeping the best epoch's weights; then score the
   halt head again.
Halt metrics come from pna.analysis.halting (F1 before EOS and F1 counted over PAD as the original did, AUROC,
stop error), so the halt head itself never sees an arithmetic label: any gain comes from the representation.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pna.analysis import binary_f1, halt_confidence, halting_metrics
from pna.analysis.series import HALT_THRESHOLD
from pna import atomic, runner
from pna.evaluate import Evaluation, evaluate
from pna.train import TrainConfig, freeze_halt_head, load_checkpoint, train

__all__ = ["TRANSFER_TASK", "TransferResult", "TransferSettings", "f1_bootstrap_ci", "file_key", "freeze_halt_head",
           "run_transfer", "score_halting", "transfer_and_score", "transfer_job"]

TRANSFER_TASK = "arithmetic"


@dataclass
class TransferResult:
    """zero_shot / adapted: halting metrics dicts on the arithmetic test split before / after fine-tuning;
    history: the trainer's per-epoch metrics of the fine-tuning; best_epoch: the epoch whose weights were kept;
    frozen: names of the frozen halt-head parameters; n_test: test examples."""

    zero_shot: dict[str, Any]
    adapted: dict[str, Any]
    history: list[dict[str, float]]
    best_epoch: int
    frozen: list[str]
    n_test: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def f1_bootstrap_ci(
    evaluation: Evaluation, with_pad: bool, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the pooled halt F1, resampling whole examples (positions of one example stay
    together); positions under halt_mask, or every position with with_pad (the original's counting)."""
    if n_boot < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"n_boot, confidence: need n_boot >= 1 and 0 < confidence < 1, got {n_boot}, {confidence}")
    predicted = halt_confidence(evaluation.halt_logits) > HALT_THRESHOLD
    positive = evaluation.halt_labels == 1.0
    scored = np.ones_like(evaluation.halt_mask) if with_pad else evaluation.halt_mask
    rng = np.random.default_rng(seed)
    f1s = []
    for _ in range(n_boot):
        rows = rng.integers(0, evaluation.n, evaluation.n)
        f1s.append(binary_f1(predicted[rows][scored[rows]], positive[rows][scored[rows]]).f1)
    f1s = np.array([f for f in f1s if not math.isnan(f)])
    if f1s.size == 0:
        return math.nan, math.nan
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(f1s, tail)), float(np.percentile(f1s, 100 - tail))


def score_halting(evaluation: Evaluation) -> dict[str, Any]:
    """Halting metrics of an evaluation (pna.analysis.halting_metrics: "f1" before EOS, "f1_with_pad", AUROC,
    stop error) plus bootstrap CIs "f1_ci" and "f1_with_pad_ci" over examples."""
    metrics = halting_metrics(evaluation.halt_logits, evaluation.halt_labels, evaluation.halt_mask,
                              evaluation.result_pos).to_dict()
    metrics["f1_ci"] = list(f1_bootstrap_ci(evaluation, with_pad=False))
    metrics["f1_with_pad_ci"] = list(f1_bootstrap_ci(evaluation, with_pad=True))
    return metrics


def file_key(path: str | Path) -> str:
    """SHA-256 of a file's bytes: the identity of a checkpoint whatever its path."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class TransferSettings:
    """The fine-tuning recipe (defaults: the original's, cross_task_transfer.py): Adam lr 1e-4 without weight
    decay at a constant rate, <= 20 epochs, early stopping with patience 5 on validation token accuracy,
    batch 32, clip 1.0. n_train / n_val / n_test: arithmetic split sizes (None: 8000 / 1000 / 1000)."""

    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    max_epochs: int = 20
    patience: int = 5
    lr: float = 1e-4
    batch_size: int = 32
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"
    early_stop: str = "val_token_accuracy"
    grad_clip: float = 1.0

    def train_config(self, source: TrainConfig, source_key: str, seed: int, out_dir: str | Path, device: str,
                     ) -> TrainConfig:
        """The trainer's config of the fine-tuning run: CE only (alpha = beta = gamma = 0) on arithmetic chains,
        the source's architecture, the halt head frozen, starting from the source's weights."""
        return TrainConfig(task=TRANSFER_TASK, arch=source.arch, variant=source.variant, tiny=source.tiny,
                           model=dict(source.model), data_protocol=source.data_protocol, bf16=source.bf16, alpha=0.0, beta=0.0, gamma=0.0, seed=seed,
                           init_from=source_key, freeze_halt=True, out_dir=str(out_dir), device=device, quiet=True,
                           warmup_steps=0, **{k: v for k, v in asdict(self).items() if k != "n_test"})


def run_transfer(checkpoint: str | Path, out_dir: str | Path, settings: TransferSettings = TransferSettings(),
                 seed: int = 0, device: str = "cpu") -> TransferResult:
    """Zero-shot then adapted halt metrics of a parity checkpoint on arithmetic chains; the fine-tuning is a
    pna.train run in out_dir (resumable; its identity includes the checkpoint's content hash). The chains, their
    layout and the fine-tuning data follow the source run's data_protocol (faithful: the original's generator,
    truncated to 64 tokens, PAD labelled 1; its F1 is "f1_with_pad", pna.analysis.faithful_halt_f1)."""
    model, source = load_checkpoint(checkpoint, device)
    cfg = settings.train_config(source, file_key(checkpoint), seed, out_dir, device)
    test = cfg.split("test", settings.n_test)
    layout = {"max_len": cfg.max_len(), "device": device, "protocol": cfg.data_protocol}
    zero_shot = score_halting(evaluate(model, test, **layout))
    trained = train(cfg, init_model=model)
    frozen = [name for name, p in trained.model.named_parameters() if not p.requires_grad]
    adapted = score_halting(evaluate(trained.model, test, **layout))
    return TransferResult(zero_shot, adapted, trained.history, int(trained.best_val["epoch"]), frozen, len(test))


def transfer_job(label: str, checkpoint: str | Path, settings: TransferSettings, seed: int, device: str,
                 source_key: str | None = None) -> runner.Job:
    """A pna.runner Job of run_transfer; its identity: the source's identity (source_key, e.g. the run key of
    the job that trained it; default the checkpoint's content hash), the settings and the seed."""
    key = source_key if source_key is not None else file_key(checkpoint)
    return runner.Job(fn="pna.transfer:transfer_and_score", label=label,
                      config={"source": key, "settings": asdict(settings), "seed": seed},
                      options={"checkpoint": str(Path(checkpoint).resolve()), "device": device})


def transfer_and_score(config: dict[str, Any], run_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Job function of transfer_job: run_transfer with the fine-tuning run in run_dir/finetune."""
    out = atomic.make_dirs(run_dir / "finetune", base=run_dir)
    return run_transfer(options["checkpoint"], out, TransferSettings(**config["settings"]), seed=config["seed"],
                        device=options["device"]).to_dict()
