"""The Transformer baseline: a pre-LN GPT with a halt head on the final hidden state.

Its "state entropy" is the energy entropy of the last block's hidden vector x_t (before the final LayerNorm):
p = x_t^2 / sum x_t^2 over the d_model entries, H = -sum p log p, the same definition the SSM uses over its
recurrent state.

The "faithful" variant (FAITHFUL_TRANSFORMER in pna.models) is the original work's Transformer: dropout 0.1 on the
embeddings, the attention weights and the feed-forward (after GELU and after its output projection), an LM head
with bias, 256 positions and a halt MLP d_model -> 64 -> ReLU -> 1 on the final (post-LayerNorm) hidden state;
5,051,034 parameters at the original 25-token vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pna_kernels import state_entropy

from .common import ModelOutput, StepOutput, num_parameters


@dataclass
class TransformerConfig:
    """Sizes of the GPT baseline (defaults: 4,993,601 parameters with the shared 31-token vocabulary; the
    original's 5.05M also counted an MLP halt head 320 -> 64 -> 1, an LM-head bias and 256 positions).

    dropout: on the embeddings, attention weights and feed-forward (training only); head_bias: the LM head has a
    bias; halt_hidden: 0 for a linear halt head d_model -> 1, else an MLP d_model -> halt_hidden -> ReLU -> 1."""

    vocab_size: int
    d_model: int = 320
    n_layers: int = 4
    n_heads: int = 8
    ff_mult: int = 4
    max_len: int = 128
    dropout: float = 0.0
    head_bias: bool = False
    halt_hidden: int = 0


class Block(nn.Module):
    """Pre-LN decoder block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"n_heads: {cfg.n_heads} must divide d_model {cfg.d_model}")
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ff_mult * cfg.d_model), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.ff_mult * cfg.d_model, cfg.d_model), nn.Dropout(cfg.dropout),
        )
        self.dropout = cfg.dropout

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(batch, length, 3, self.n_heads, dim // self.n_heads).unbind(2)
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.proj(attn.transpose(1, 2).reshape(batch, length, dim))
        return x + self.mlp(self.ln2(x))


class TransformerLM(nn.Module):
    """GPT baseline returning per-token halt logits and hidden-state entropy (every layer and the last)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.norm_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=cfg.head_bias)
        if cfg.halt_hidden < 0:
            raise ValueError(f"halt_hidden: expected 0 (linear head) or a positive width, got {cfg.halt_hidden}")
        self.halt_head = nn.Linear(cfg.d_model, 1) if cfg.halt_hidden == 0 else nn.Sequential(
            nn.Linear(cfg.d_model, cfg.halt_hidden), nn.ReLU(), nn.Linear(cfg.halt_hidden, 1))

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return num_parameters(self)

    def forward(self, input_ids: Tensor) -> ModelOutput:
        """input_ids (B, L) -> ModelOutput; layer_halt_logits holds the halt head applied after every layer."""
        length = input_ids.shape[1]
        if length > self.cfg.max_len:
            raise ValueError(f"input_ids: length {length} exceeds the model's max_len {self.cfg.max_len}")
        x = self.embed_dropout(self.embed(input_ids) + self.pos.weight[:length])
        entropies, halts = [], []
        for block in self.blocks:
            x = block(x)
            entropies.append(state_entropy(x.float()[..., None]))
            halts.append(self.halt_head(self.norm_f(x)).squeeze(-1).float())
        logits = self.head(self.norm_f(x))
        layer_entropy, layer_halt = torch.stack(entropies), torch.stack(halts)
        return ModelOutput(logits, layer_halt[-1], layer_entropy[-1], layer_entropy, layer_halt)

    def init_cache(self, batch_size: int) -> dict:
        """Decoding cache: the tokens fed so far (each step re-runs the prefix; sequences are <= max_len)."""
        return {"tokens": torch.zeros(batch_size, 0, dtype=torch.long, device=self.embed.weight.device)}

    @torch.no_grad()
    def step(self, token_ids: Tensor, cache: dict) -> StepOutput:
        """Feed one token per sequence, token_ids (B,); returns the last position's logits, halt logit, entropy."""
        cache["tokens"] = torch.cat([cache["tokens"], token_ids[:, None]], dim=1)
        out = self.forward(cache["tokens"])
        return StepOutput(out.logits[:, -1], out.halt_logits[:, -1], out.entropy[:, -1])
