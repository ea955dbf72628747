"""The selective-SSM language model (Mamba-1 S6 blocks on the fused scan) and the original work's variant.

    token + learned position embedding -> n_layers x (x + S6(LayerNorm(x))) -> LayerNorm -> LM head

S6 block: [u, z] = W_in x; u = silu(causal depthwise conv1d, k = 4 (u)); [dt_raw, B, C] = W_x u;
delta = W_dt dt_raw (+ bias inside the scan, softplus); A = -exp(A_log), S4D-real init A_n = -(n + 1); then
pna_kernels.selective_scan gives y, the state entropy H_t and the halt logit g_t = <halt_weight, h_t> + halt_bias
of every token in the same pass; out = W_out y.

variant="faithful" reconstructs the original architecture: no dt (h_t = exp(A) h_{t-1} + u_t B_t, i.e. delta = 1 without
softplus), expand 1, biases on W_in, W_x, W_out and the LM head, A_log drawn from N(0, 1), 256 positions, no
per-layer halt probe, and one halt head, an MLP N -> 64 -> ReLU -> 1, on s_t = mean_d h_t[d, :] of the last layer
(layer_halt_logits applies that same MLP to every layer's s_t). The original's code is not published: this layer
list is the one consistent with its reported size, exactly 5,058,906 parameters with a 25-token vocabulary
(5,065,056 with ours). The fused op returns s_t itself (selective_scan(..., return_channel_mean=True)), so the
faithful variant runs the same fused pass as the default one, without materialising every state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pna_kernels

from .common import ModelOutput, StepOutput, num_parameters


@dataclass
class SSMConfig:
    """Sizes of the SSM LM (defaults: 4,960,267 parameters with the shared 31-token vocabulary). dt_rank 0
    means ceil(d_model / 16); faithful selects the original architecture (see the module docstring)."""

    vocab_size: int
    d_model: int = 256
    n_layers: int = 11
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 0
    max_len: int = 128
    faithful: bool = False
    halt_hidden: int = 64

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model


class S6Block(nn.Module):
    """One Mamba-1 selective-SSM mixer returning its output and the per-token state entropy and halt logit."""

    def __init__(self, cfg: SSMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d_inner, n = cfg.d_inner, cfg.d_state
        self.dt_rank = 0 if cfg.faithful else (cfg.dt_rank or math.ceil(cfg.d_model / 16))
        bias = cfg.faithful  # the original's projections have biases, Mamba's have none
        self.in_proj = nn.Linear(cfg.d_model, 2 * d_inner, bias=bias)
        self.conv = nn.Conv1d(d_inner, d_inner, cfg.d_conv, groups=d_inner, padding=cfg.d_conv - 1)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * n, bias=bias)
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, cfg.d_model, bias=bias)
        if cfg.faithful:
            self.A_log = nn.Parameter(torch.randn(d_inner, n))  # N(0, 1), as reconstructed for the original
            return
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        # Mamba's init: dt = softplus(bias) log-uniform in [1e-3, 1e-1].
        dt = torch.exp(torch.rand(d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(d_inner, 1))
        # The proprioceptive probe g_t = <halt_weight, h_t> + halt_bias, read by the fused op.
        self.halt_weight = nn.Parameter(torch.randn(d_inner, n) * (0.01 / math.sqrt(d_inner * n)))
        self.halt_bias = nn.Parameter(torch.tensor(-2.0))

    def _project(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """u (..., d_inner) -> delta (..., d_inner) (without bias), B, C (..., N)."""
        dt_raw, B, C = torch.split(self.x_proj(u), [self.dt_rank, self.cfg.d_state, self.cfg.d_state], dim=-1)
        delta = torch.ones_like(u) if self.cfg.faithful else F.linear(dt_raw, self.dt_proj.weight)
        return delta, B, C

    def _scan_args(self) -> dict:
        faithful = self.cfg.faithful
        return {
            "delta_bias": None if faithful else self.dt_proj.bias.float(),
            "delta_softplus": not faithful,
        }

    def forward(self, x: Tensor, return_channel_mean: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """x (B, L, d_model) -> out (B, L, d_model), entropy (B, L), the halt feature and the channel mean.

        The halt feature is the probe's halt logits (B, L), or in the faithful variant s (B, L, N), the state
        averaged over channels; the channel mean s (B, L, N) float32 is returned when asked (always in the
        faithful variant), else None."""
        length = x.shape[1]
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u = F.silu(self.conv(u.transpose(1, 2))[..., :length].transpose(1, 2))
        delta, B, C = self._project(u)
        faithful = self.cfg.faithful
        probe = {} if faithful else {"halt_weight": self.halt_weight, "halt_bias": self.halt_bias}
        # The activations come from this model's own layers; a NaN among them reaches the loss, which the trainer
        # checks, so the op's data scan for NaN/Inf (~7% of a CPU training step) is skipped here.
        y, entropy, halt_logits, _, channel_mean = pna_kernels.selective_scan(
            u.transpose(1, 2), delta.transpose(1, 2), -torch.exp(self.A_log.float()), B.transpose(1, 2),
            C.transpose(1, 2), self.D.float(), z.transpose(1, 2), **self._scan_args(), **probe,
            return_channel_mean=faithful or return_channel_mean, check_finite=False,
        )
        return self.out_proj(y.transpose(1, 2)), entropy, channel_mean if faithful else halt_logits, channel_mean

    def init_cache(self, batch: int, device: torch.device) -> dict[str, Tensor]:
        """Decoding state: the last d_conv - 1 conv inputs and the recurrent state (fp32)."""
        return {
            "conv": torch.zeros(batch, self.cfg.d_inner, self.cfg.d_conv - 1, device=device),
            "ssm": torch.zeros(batch, self.cfg.d_inner, self.cfg.d_state, device=device),
        }

    def step(self, x: Tensor, cache: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One token: x (B, d_model) -> out (B, d_model), entropy (B,), the halt feature (halt_logits (B,), or
        s (B, N) in the faithful variant) and the channel mean s (B, N) of the new state; updates cache."""
        u, z = self.in_proj(x).chunk(2, dim=-1)
        window = torch.cat([cache["conv"], u[..., None].float()], dim=-1)
        cache["conv"] = window[..., 1:]
        u = F.silu((window * self.conv.weight[:, 0].float()).sum(-1) + self.conv.bias.float()).to(x.dtype)
        delta, B, C = self._project(u)
        args = self._scan_args()
        probe = {} if self.cfg.faithful else {"halt_weight": self.halt_weight, "halt_bias": self.halt_bias}
        y, entropy, halt, channel_mean = pna_kernels.selective_state_update(
            cache["ssm"], u, delta, -torch.exp(self.A_log.float()), B, C, self.D.float(), z,
            args["delta_bias"], args["delta_softplus"], **probe, return_channel_mean=True,
        )
        return self.out_proj(y), entropy, channel_mean if self.cfg.faithful else halt, channel_mean


class SSMLM(nn.Module):
    """The SSM language model with a halt logit and a state entropy per token and per layer."""

    def __init__(self, cfg: SSMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.d_model) for _ in range(cfg.n_layers))
        self.blocks = nn.ModuleList(S6Block(cfg) for _ in range(cfg.n_layers))
        self.norm_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=cfg.faithful)
        self.halt_mlp = (
            nn.Sequential(nn.Linear(cfg.d_state, cfg.halt_hidden), nn.ReLU(), nn.Linear(cfg.halt_hidden, 1))
            if cfg.faithful
            else None
        )

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return num_parameters(self)

    def _halt_logits(self, halt_feature: Tensor) -> Tensor:
        """A block's halt feature -> halt logits: the probe's logits as they are, or the faithful MLP on s_t."""
        if self.halt_mlp is None:
            return halt_feature.float()
        return self.halt_mlp(halt_feature).squeeze(-1).float()

    def forward(self, input_ids: Tensor, return_channel_mean: bool = False) -> ModelOutput:
        """input_ids (B, L) -> ModelOutput; return_channel_mean fills its channel_mean, the last layer's
        s_t = mean over channels of h_t (B, L, N) (the faithful variant always fills it)."""
        length = input_ids.shape[1]
        if length > self.cfg.max_len:
            raise ValueError(f"input_ids: length {length} exceeds the model's max_len {self.cfg.max_len}")
        x = self.embed(input_ids) + self.pos.weight[:length]
        entropies, halts = [], []
        last = len(self.blocks) - 1
        for i, (norm, block) in enumerate(zip(self.norms, self.blocks)):
            out, entropy, halt_feature, channel_mean = block(norm(x), return_channel_mean and i == last)
            x = x + out
            entropies.append(entropy)
            halts.append(self._halt_logits(halt_feature))
        logits = self.head(self.norm_f(x))
        layer_entropy, layer_halt = torch.stack(entropies), torch.stack(halts)
        return ModelOutput(logits, layer_halt[-1], layer_entropy[-1], layer_entropy, layer_halt, channel_mean)

    def init_cache(self, batch_size: int) -> dict:
        """Decoding cache for batch_size sequences."""
        device = self.embed.weight.device
        return {"t": 0, "layers": [block.init_cache(batch_size, device) for block in self.blocks]}

    @torch.no_grad()
    def step(self, token_ids: Tensor, cache: dict) -> StepOutput:
        """Feed one token per sequence, token_ids (B,), and return the next-token logits, halt logit and entropy."""
        t = cache["t"]
        if t >= self.cfg.max_len:
            raise ValueError(f"cache: already {t} tokens, the model's max_len is {self.cfg.max_len}")
        x = self.embed(token_ids) + self.pos.weight[t]
        for norm, block, layer_cache in zip(self.norms, self.blocks, cache["layers"]):
            out, entropy, halt_feature, channel_mean = block.step(norm(x), layer_cache)
            x = x + out
        cache["t"] = t + 1
        return StepOutput(self.head(self.norm_f(x)), self._halt_logits(halt_feature), entropy, channel_mean)
