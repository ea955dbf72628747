"""Profiles (how big each mode is) and protocols (how each side of the comparison trains and scores) of
`pna reproduce`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pna.train import TINY_MODEL

MAIN_RUNS: tuple[tuple[str, str], ...] = (("parity", "ssm"), ("parity", "transformer"), ("sorting", "ssm"))
ARCHS = ("ssm", "transformer")


@dataclass(frozen=True)
class Protocol:
    """How one side of the comparison trains and scores: loss mode, SSM variant, number of seeds, F1 counting."""

    name: str
    loss_mode: str
    ssm_variant: str
    n_seeds: int
    f1_over_pad: bool
    description: str

    def variant(self, arch: str) -> str:
        """The architecture variant this protocol trains for arch."""
        return self.ssm_variant if arch == "ssm" else "default"

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds it trains with."""
        return tuple(range(self.n_seeds))


@dataclass(frozen=True)
class Profile:
    """Sizes of one mode. train: TrainConfig overrides for every run (per arch); n_test: test examples per run;
    n_free / n_free_ood: free-generation examples in-distribution / OOD; transfer: pna.transfer.TransferSettings
    fields (the rest keep the original's recipe); transfer_seeds: how many of each protocol's seeds are
    transferred; sweep_*: the sweep grid; workers: default number of training processes; reductions: what this
    mode changes relative to the full run; exclude_unlearned: leave main runs that did not learn their task
    (pna.reproduce.learning) out of the headline cells (off only in the smoke test, whose runs learn nothing);
    dropped: stages ("transfer", "sweep") this mode leaves out, with the reason in reductions; train_by_task:
    TrainConfig overrides per task on top of train (see train_fields)."""

    name: str
    corrected_seeds: int
    train: dict[str, dict[str, Any]]
    n_test: int | None
    n_free: int
    n_free_ood: int
    transfer: dict[str, Any]
    transfer_seeds: int
    sweep_alphas: tuple[float, ...]
    sweep_betas: tuple[float, ...]
    sweep_seeds: tuple[int, ...]
    workers: int = 1
    reductions: tuple[str, ...] = field(default_factory=tuple)
    exclude_unlearned: bool = True
    dropped: tuple[str, ...] = ()
    train_by_task: dict[str, dict[str, Any]] = field(default_factory=dict)

    def train_fields(self, task: str, arch: str) -> dict[str, Any]:
        """TrainConfig overrides of one main run: the arch's, then the task's (train_by_task)."""
        return {**self.train[arch], **self.train_by_task.get(task, {})}


FULL = Profile(
    name="full", corrected_seeds=5, train={"ssm": {}, "transformer": {}}, n_test=None, n_free=400, n_free_ood=100,
    transfer={"max_epochs": 20, "patience": 5}, transfer_seeds=5,
    sweep_alphas=(0.0, 0.01, 0.05, 0.1, 0.2, 0.5), sweep_betas=(0.0, 0.05, 0.1, 0.2, 0.4), sweep_seeds=(0, 1, 2),
)
QUICK = Profile(
    name="quick", corrected_seeds=2,
    train={arch: {"n_train": 8000, "n_val": 200, "max_epochs": 6, "patience": 6, "lr": 3e-3, "warmup_steps": 30,
                  "tiny": True, "quiet": True} for arch in ARCHS},
    train_by_task={"sorting": {"n_train": 4000, "max_epochs": 6, "patience": 6, "lr": 6e-3}},
    n_test=200, n_free=100, n_free_ood=40,
    transfer={"n_train": 500, "n_val": 100, "n_test": 200, "max_epochs": 3, "patience": 2}, transfer_seeds=1,
    sweep_alphas=(0.0, 0.5), sweep_betas=(0.0, 0.4), sweep_seeds=(0,), workers=2,
    dropped=("transfer", "sweep"),
    reductions=(
        "tiny models (the trainer's --tiny sizes: " + "; ".join(f"{arch} {sizes}" for arch, sizes in TINY_MODEL.items())
        + ") instead of the paper's ~5M parameters",
        "parity: 8000 training examples as in the paper, sorting: 4000 instead of 8000; 200 validation examples "
        "instead of 1000; 6 epochs (cosine to 0 over them, no early stop) instead of <= 50 with patience 10; lr "
        "3e-3 (parity) and 6e-3 (sorting) with 30 warmup steps instead of 3e-4 with 100: a budget whose measured "
        "learning curves pass the 'learned' thresholds with a margin (see the runs table) on a 2-core CPU",
        "200 test examples per run instead of 1000",
        "corrected protocol: 2 seeds instead of 5",
        "free generation: 100 in-distribution + 40 OOD examples instead of 400 + 100",
        "transfer to arithmetic chains: not run (dropped): no fine-tuning budget that fits was shown to learn the "
        "chains' multi-digit arithmetic (the earlier quick profile's transfer F1 was 0-19%), and transfer F1 is "
        "only defined for models that do the task",
        "alpha x beta sweep: not run (dropped): its cells would add 4 more runs of the parity budget, which keeps "
        "the quick job within 15 minutes only on an otherwise idle 2-core machine",
    ),
)
TINY = Profile(
    name="tiny", corrected_seeds=2,
    train={arch: {"n_train": 64, "n_val": 16, "max_epochs": 1, "patience": 1, "lr": 3e-3, "warmup_steps": 2,
                  "tiny": True, "quiet": True} for arch in ARCHS},
    n_test=24, n_free=6, n_free_ood=4,
    transfer={"n_train": 32, "n_val": 8, "n_test": 16, "max_epochs": 1, "patience": 1}, transfer_seeds=1,
    sweep_alphas=(0.0, 0.5), sweep_betas=(0.1,), sweep_seeds=(0,),
    reductions=(
        "smoke-test mode: tiny models, 64 training / 16 validation examples, 1 epoch; the numbers are "
        "meaningless, only the report's structure is exercised",
        "24 test examples per run; corrected protocol: 2 seeds",
        "free generation: 6 in-distribution + 4 OOD examples",
        "transfer: 32 / 8 / 16 arithmetic examples, 1 epoch, first seed only",
        "sweep: alpha {0, 0.5} x beta {0.1}, 1 seed",
        "runs that did not learn their task are marked but kept in the cells (nothing learns in a smoke test)",
    ),
    exclude_unlearned=False,
)


def protocols(profile: Profile) -> tuple[Protocol, Protocol]:
    """The faithful and the corrected protocol under a profile."""
    return (
        Protocol("faithful", "faithful", "faithful", 1, True,
                 "original loss (energy term without gradient), original SSM architecture, one run, "
                 "halt F1 counted over PAD positions"),
        Protocol("corrected", "corrected", "default", profile.corrected_seeds, False,
                 "differentiable energy term (expected compute), default SSM, "
                 f"{profile.corrected_seeds} seeds, halt F1 over positions before EOS"),
    )
