"""`pna train`: train one model, e.g. `pna train --task parity --arch ssm --alpha 0.05 --beta 0.1 --seed 0
--out runs/x`. A --config file (JSON or TOML with TrainConfig fields) sets defaults; flags given override it."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields

import torch.distributed as dist

from pna import atomic, runner
from pna.loss import LOSS_MODES
from pna.models import ARCHS, VARIANTS
from pna.tasks import PROTOCOLS, TASKS
from pna.train import EARLY_STOP, OPTIMIZERS, SCHEDULES, TrainConfig, train

# flag -> TrainConfig field, for the flags whose names differ from the field.
RENAMED = {"out": "out_dir", "epochs": "max_epochs"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `pna train`; unset flags fall back to the config file, then to TrainConfig's defaults."""
    add = parser.add_argument
    add("--config", help="JSON or TOML file of TrainConfig fields (flags override it)")
    add("--task", choices=TASKS)
    add("--arch", choices=ARCHS)
    add("--variant", choices=VARIANTS, help="'faithful': the original SSM / Transformer architecture")
    add("--data-protocol", dest="data_protocol", choices=PROTOCOLS,
        help="'faithful': the original's data generators and layout (PAD labelled 1, max_len - 1 positions)")
    add("--loss-mode", dest="loss_mode", choices=LOSS_MODES,
        help="'faithful': energy and entropy terms without gradient, as in the original")
    for name in ("alpha", "beta", "gamma", "lr", "weight_decay", "grad_clip"):
        add(f"--{name.replace('_', '-')}", dest=name, type=float)
    for name in ("seed", "batch_size", "warmup_steps", "patience", "n_train", "n_val", "stop_after_epoch"):
        add(f"--{name.replace('_', '-')}", dest=name, type=int)
    add("--epochs", type=int, help="maximum number of epochs")
    add("--device", help="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...")
    add("--no-bf16", dest="bf16", action="store_const", const=False, help="no bf16 autocast on CUDA")
    add("--tiny", action="store_const", const=True,
        help="a very small model, and 512 / 128 train / val examples unless --n-train / --n-val say otherwise")
    add("--quiet", action="store_const", const=True, help="no progress bars or per-epoch lines")
    add("--optimizer", choices=OPTIMIZERS, help="adamw (default) or adam")
    add("--schedule", choices=SCHEDULES, help="warmup_cosine (default) or constant")
    add("--early-stop", dest="early_stop", choices=tuple(EARLY_STOP),
        help="validation metric of early stopping and best.pt (default val_loss_total)")
    add("--out", help="output folder (default runs/train); the same run there is resumed, another is refused")
    add("--force", action="store_true", default=None,
        help="delete what an earlier run wrote in --out (only the files it wrote) and start over")


def _flag(name: str) -> str:
    """The command-line flag of a TrainConfig field."""
    flag = {field: flag for flag, field in RENAMED.items()}.get(name, name)
    return "--" + flag.replace("_", "-")


def _given_fields(args: argparse.Namespace) -> dict[str, object]:
    names = {f.name for f in fields(TrainConfig)}
    given = {RENAMED.get(k, k): v for k, v in vars(args).items() if v is not None}
    return {k: v for k, v in given.items() if k in names}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from the config file (if any) with every flag that was given on top. A ValueError names the
    flag ("--seed: ...") when the bad value came from a flag, the config file when it came from there."""
    overrides = _given_fields(args)
    try:
        if args.config:
            return TrainConfig.from_file(args.config, **overrides)
        return TrainConfig(**overrides)
    except ValueError as exc:
        raise ValueError(_name_argument(str(exc), overrides, args.config)) from None


def _name_argument(message: str, flags: dict[str, object], config: str | None) -> str:
    """A TrainConfig error ("seed: ...") with the flag that set the field, or the config file, in front."""
    field_name = message.split(":", 1)[0].split(".", 1)[0]
    if field_name in flags:
        return f"{_flag(field_name)}:{message.split(':', 1)[1]}" if "." not in message.split(":", 1)[0] \
            else f"{_flag(field_name)} {message}"
    if config and field_name in {f.name for f in fields(TrainConfig)}:
        return f"--config {config}: {message}"
    return message


def run(args: argparse.Namespace) -> int:
    """Train and print the best validation metrics as JSON (rank 0 only, under torchrun)."""
    cfg = config_from_args(args)
    out = runner.check_out_dir(cfg.out_dir, "--out")
    if args.force and out.is_dir():
        with runner.RunLock(out):
            atomic.remove_written(out)
    try:
        result = train(cfg)
    except ValueError as exc:
        raise ValueError(_name_argument(str(exc), {**_given_fields(args), "out_dir": cfg.out_dir}, None)) from None
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(json.dumps({"best_checkpoint": str(result.best_checkpoint), "best_val": result.best_val,
                          "config": asdict(cfg)}, indent=2))
    return 0
