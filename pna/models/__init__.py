"""Models: the selective-SSM LM (default and the original "faithful" variant) and the Transformer baseline."""
from __future__ import annotations

from torch import nn

from .common import ModelOutput, StepOutput, num_parameters
from .ssm import SSMLM, SSMConfig
from .transformer import TransformerConfig, TransformerLM

ARCHS = ("ssm", "transformer")
VARIANTS = ("default", "faithful")
# The original architecture: d_model 512, 6 layers, d_state 16, expand 1, no dt, 256 positions.
FAITHFUL_SSM = {"d_model": 512, "n_layers": 6, "d_state": 16, "expand": 1, "max_len": 256, "faithful": True}
# The original Transformer: d_model 320, 4 layers, 8 heads, dropout 0.1, LM-head bias, halt MLP 320 -> 64 -> 1.
FAITHFUL_TRANSFORMER = {"d_model": 320, "n_layers": 4, "n_heads": 8, "ff_mult": 4, "max_len": 256, "dropout": 0.1,
                        "head_bias": True, "halt_hidden": 64}


def build_model(arch: str, vocab_size: int, variant: str = "default", **overrides) -> nn.Module:
    """Build a model; overrides set config fields (e.g. d_model=32, n_layers=2 for a tiny model).

    arch "ssm" -> SSMLM (SSMConfig), "transformer" -> TransformerLM (TransformerConfig); variant "faithful" is
    the original work's architecture of either (FAITHFUL_SSM, FAITHFUL_TRANSFORMER).
    """
    if arch not in ARCHS:
        raise ValueError(f"arch: expected one of {ARCHS}, got {arch!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    if arch == "transformer":
        config_cls, model_cls = TransformerConfig, TransformerLM
        base = dict(FAITHFUL_TRANSFORMER) if variant == "faithful" else {}
    else:
        config_cls, model_cls = SSMConfig, SSMLM
        base = dict(FAITHFUL_SSM) if variant == "faithful" else {}
    fields = set(config_cls.__dataclass_fields__) - {"vocab_size", "faithful"}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"overrides: {sorted(unknown)} are not {config_cls.__name__} fields ({sorted(fields)})")
    base.update(overrides)
    return model_cls(config_cls(vocab_size=vocab_size, **base))


__all__ = ["ARCHS", "FAITHFUL_SSM", "FAITHFUL_TRANSFORMER", "VARIANTS", "ModelOutput", "SSMLM", "SSMConfig", "StepOutput", "TransformerConfig",
           "TransformerLM", "build_model", "num_parameters"]
