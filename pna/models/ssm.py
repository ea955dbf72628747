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


def _bias_part(bias: Tensor | None, start: int, stop: int) -> Tensor | None:
    return None if bias is None else bias[start:stop]


def _batch_sum_mm(channels: Tensor, rows: Tensor) -> Tensor:
    """sum_b channels[b] @ rows[b] for channels (B, M, L) and rows (B, L, K) -> (M, K), as one matmul over B * L.

    channels is regrouped to (M, B, L) first: a copy of whole rows of L contiguous values, not a transpose."""
    batch, m, length = channels.shape
    return channels.transpose(0, 1).reshape(m, batch * length) @ rows.reshape(batch * length, rows.shape[-1])


class _RowsToChannels(torch.autograd.Function):
    """F.linear(x, weight) transposed to channel-first: x (B, L, K), weight (M, K) -> (B, M, L), contiguous."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return torch.bmm(weight.expand(x.shape[0], -1, -1), x.mT)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad.mT, weight.expand(x.shape[0], -1, -1))  # (B, L, K), contiguous
        return grad_x, _batch_sum_mm(grad, x)


class _ChannelsToRows(torch.autograd.Function):
    """F.linear(y.transpose(1, 2), weight) for channel-first y (B, K, L), weight (M, K) -> (B, L, M), contiguous."""

    @staticmethod
    def forward(ctx, y: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(y, weight)
        return torch.bmm(y.mT, weight.t().expand(y.shape[0], -1, -1))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        y, weight = ctx.saved_tensors
        grad_y = torch.bmm(weight.t().expand(y.shape[0], -1, -1), grad.mT)  # (B, K, L), contiguous
        return grad_y, _batch_sum_mm(y, grad).t()


def _rows_to_channels(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x (B, L, K) -> (x @ weight.T + bias) transposed to (B, M, L), computed in that layout."""
    out = _RowsToChannels.apply(x, weight)
    return out if bias is None else out + bias[:, None]


def _channels_to_rows(y: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """y (B, K, L) -> y.transpose(1, 2) @ weight.T + bias, (B, L, M), computed without transposing y."""
    out = _ChannelsToRows.apply(y, weight)
    return out if bias is None else out + bias


class _CausalDepthwiseConv(torch.autograd.Function):
    """Causal depthwise conv1d of u (B, D, L) with weight (D, k) and bias (D,), as nn.Conv1d(groups=D,
    padding=k - 1) cut to the first L outputs, as k shifted multiply-adds (the padded outputs are never made)."""

    @staticmethod
    def forward(ctx, u: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(u, weight)
        k, length = weight.shape[1], u.shape[-1]
        padded = F.pad(u, (k - 1, 0))
        out = torch.addcmul(bias[:, None], padded[..., k - 1:], weight[:, k - 1, None])
        for j in range(k - 1):
            out.addcmul_(padded[..., j:j + length], weight[:, j, None])
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        u, weight = ctx.saved_tensors
        k, length = weight.shape[1], u.shape[-1]
        # out[t] = bias + sum_j weight[j] u[t - (k - 1) + j]: u[s] reaches out[s + (k - 1) - j]
        grad_padded = F.pad(grad, (0, k - 1))
        grad_u = grad * weight[:, k - 1, None]
        for j in range(k - 1):
            grad_u.addcmul_(grad_padded[..., k - 1 - j:k - 1 - j + length], weight[:, j, None])
        padded = F.pad(u, (k - 1, 0))
        grad_weight = torch.stack([(grad * padded[..., j:j + length]).sum((0, 2)) for j in range(k)], dim=1)
        return grad_u, grad_weight, grad.sum((0, 2))


def _causal_depthwise_conv(u: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """u (B, D, L) -> the causal depthwise conv (B, D, L) with weight (D, k) and bias (D,)."""
    return _CausalDepthwiseConv.apply(u, weight, bias)


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
        faithful variant), else None.

        Inside the block the activations are kept channel-first, (B, channels, L), the fused op's layout: the
        projections in and out are batched matmuls that read and write that layout directly (_rows_to_channels,
        _channels_to_rows), so no (B, L, d_inner) <-> (B, d_inner, L) transposed copy is made either way."""
        length, d_inner = x.shape[1], self.cfg.d_inner
        u = _rows_to_channels(x, self.in_proj.weight[:d_inner], _bias_part(self.in_proj.bias, 0, d_inner))
        z = _rows_to_channels(x, self.in_proj.weight[d_inner:], _bias_part(self.in_proj.bias, d_inner, 2 * d_inner))
        u = F.silu(_causal_depthwise_conv(u, self.conv.weight[:, 0], self.conv.bias))
        delta, B, C = self._project_channels(u)
        faithful = self.cfg.faithful
        probe = {} if faithful else {"halt_weight": self.halt_weight, "halt_bias": self.halt_bias}
        # The activations come from this model's own layers; a NaN among them reaches the loss, which the trainer
        # checks, so the op's data scan for NaN/Inf is skipped here.
        y, entropy, halt_logits, _, channel_mean = pna_kernels.selective_scan(
            u, delta, -torch.exp(self.A_log.float()), B, C, self.D.float(), z, **self._scan_args(), **probe,
            return_channel_mean=faithful or return_channel_mean, check_finite=False,
        )
        out = _channels_to_rows(y, self.out_proj.weight, self.out_proj.bias)
        return out, entropy, channel_mean if faithful else halt_logits, channel_mean

    def _project_channels(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """u (B, d_inner, L) -> delta (B, d_inner, L) (without bias), B, C (B, N, L): _project, channel-first."""
        batch = u.shape[0]
        proj = torch.bmm(self.x_proj.weight.expand(batch, -1, -1), u)
        if self.x_proj.bias is not None:
            proj = proj + self.x_proj.bias[:, None]
        dt_raw, B, C = torch.split(proj, [self.dt_rank, self.cfg.d_state, self.cfg.d_state], dim=1)
        if self.cfg.faithful:
            return torch.ones_like(u), B, C
        return torch.bmm(self.dt_proj.weight.expand(batch, -1, -1), dt_raw), B, C

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
