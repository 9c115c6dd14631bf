"""A causal Transformer language model (RoPE, SwiGLU, pre-norm) as a baseline for the xLSTM."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bioxlstm.errors import ConfigError
from bioxlstm.layers.dense import Linear
from bioxlstm.model import loss_targets, token_cross_entropy
from bioxlstm.sampling import sample_next

FFN_KINDS = ("swiglu", "gelu")


@dataclass
class TransformerConfig:
    """Shape of the baseline Transformer (Transformer++ style: RoPE, SwiGLU, bias-free)."""

    vocab_size: int
    d_model: int = 256
    num_layers: int = 4
    num_heads: int = 4
    ffn_factor: float = 4.0
    ffn: str = "swiglu"
    context_length: int = 1024
    dropout: float = 0.0
    rope_theta: float = 10_000.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "context_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"config field '{name}' must be a positive integer, "
                                  f"got {value!r}")
        if self.d_model % self.num_heads or (self.d_model // self.num_heads) % 2:
            raise ConfigError(f"config field 'num_heads' ({self.num_heads}) must divide d_model "
                              f"({self.d_model}) into heads of even size")
        if self.ffn not in FFN_KINDS:
            raise ConfigError(f"config field 'ffn' must be one of {FFN_KINDS}, got {self.ffn!r}")
        if self.ffn_factor <= 0 or self.rope_theta <= 0:
            raise ConfigError("config fields 'ffn_factor' and 'rope_theta' must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"config field 'dropout' must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        """Plain fields, for run.json and checkpoints."""
        return dataclasses.asdict(self)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def ffn_inner_dim(self) -> int:
        """Hidden width of the FFN; SwiGLU uses 2/3 of it so both kinds cost the same."""
        hidden = self.ffn_factor * self.d_model
        if self.ffn == "swiglu":
            hidden = 2 * hidden / 3
        return max(8, int(-(-hidden // 8) * 8))

    def num_parameters(self) -> int:
        """Parameter count of the model this config builds, computed without building it."""
        d, h = self.d_model, self.ffn_inner_dim
        ffn = (3 if self.ffn == "swiglu" else 2) * d * h
        per_layer = 4 * d * d + ffn + 2 * d
        return 2 * self.vocab_size * d + self.num_layers * per_layer + d


@dataclass
class KVCache:
    """Per-layer key/value buffers for incremental decoding; `length` tokens are filled."""

    keys: list[Tensor] = field(default_factory=list)
    values: list[Tensor] = field(default_factory=list)
    length: int = 0

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v (B, H, T, Dh) after the filled part; return all keys and values so far."""
        end = self.length + k.shape[2]
        if layer == len(self.keys):
            self.keys.append(k.new_empty(*k.shape[:2], max(end, 64), k.shape[3]))
            self.values.append(v.new_empty(*v.shape[:2], max(end, 64), v.shape[3]))
        if end > self.keys[layer].shape[2]:
            capacity = max(end, 2 * self.keys[layer].shape[2])
            self.keys[layer] = _grow(self.keys[layer], self.length, capacity)
            self.values[layer] = _grow(self.values[layer], self.length, capacity)
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


def _grow(buffer: Tensor, filled: int, capacity: int) -> Tensor:
    bigger = buffer.new_empty(*buffer.shape[:2], capacity, buffer.shape[3])
    bigger[:, :, :filled] = buffer[:, :, :filled]
    return bigger


@dataclass
class TransformerOutput:
    """Logits (B, S, vocab) and, when asked for, the updated KV cache."""

    logits: Tensor
    cache: KVCache | None = None


def rope_tables(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype
                ) -> tuple[Tensor, Tensor]:
    """cos and sin tables (S, head_dim / 2) for rotary embeddings at the given positions."""
    precision = torch.float64 if dtype == torch.float64 else torch.float32
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device,
                                       dtype=precision) / head_dim)
    angles = positions.to(precision)[:, None] * inv_freq[None, :]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (first half, second half) of the last axis of x (B, H, S, Dh)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention through scaled_dot_product_attention, with a KV cache."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.qkv = Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out = Linear(config.d_model, config.d_model, bias=False)
        self.dropout = config.dropout

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None, layer: int
                ) -> Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        past = 0 if cache is None else cache.length
        if cache is not None:
            k, v = cache.append(layer, k, v)
        mask = None
        if past and s > 1:
            mask = torch.ones(s, past + s, dtype=torch.bool, device=x.device).tril(past)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=past == 0 and s > 1,
            dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, s, d))


class FeedForward(nn.Module):
    """SwiGLU or GELU position-wise feed-forward, bias-free."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.gated = config.ffn == "swiglu"
        hidden = config.ffn_inner_dim
        self.up = Linear(config.d_model, (2 if self.gated else 1) * hidden, bias=False)
        self.down = Linear(hidden, config.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.gated:
            gate, up = self.up(x).chunk(2, dim=-1)
            return self.down(F.silu(gate) * up)
        return self.down(F.gelu(self.up(x)))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: x + attn(LN(x)), then x + ffn(LN(x))."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(config.d_model, bias=False)
        self.attn = CausalSelfAttention(config)
        self.norm_ffn = nn.LayerNorm(config.d_model, bias=False)
        self.ffn = FeedForward(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None, layer: int
                ) -> Tensor:
        x = x + self.drop(self.attn(self.norm_attn(x), cos, sin, cache, layer))
        return x + self.drop(self.ffn(self.norm_ffn(x)))


class TransformerLanguageModel(nn.Module):
    """Causal Transformer LM: embedding, pre-norm blocks, final norm, untied bias-free head."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.d_model, bias=False)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 L)."""
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith(("attn.out.weight", "ffn.down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * self.config.num_layers))
            else:
                nn.init.normal_(p, std=0.02)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, input_ids: Tensor, cache: KVCache | None = None,
                return_cache: bool = False) -> TransformerOutput:
        """Logits for input_ids (B, S); with a cache, the tokens continue the cached prefix."""
        if return_cache and cache is None:
            cache = KVCache()
        past = 0 if cache is None else cache.length
        x = self.drop(self.embedding(input_ids))
        positions = torch.arange(past, past + input_ids.shape[1], device=input_ids.device)
        cos, sin = rope_tables(positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, layer)
        if cache is not None:
            cache.length += input_ids.shape[1]
        logits = self.head(self.norm(x))
        return TransformerOutput(logits, cache if return_cache else None)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json and model.safetensors, as the xLSTM does (so the Trainer can save it)."""
        from bioxlstm.checkpoint import save_pretrained

        return save_pretrained(self, directory)

    def step(self, token_ids: Tensor, cache: KVCache) -> Tensor:
        """Logits (B, vocab) for one new token per sequence (B,), updating the cache in place."""
        return self.forward(token_ids[:, None], cache=cache).logits[:, -1]

    def loss(self, input_ids: Tensor, labels: Tensor | None = None, objective: str = "clm",
             reduction: str = "mean") -> Tensor:
        """Next-token cross-entropy (mean or sum); labels align with input_ids, -100 is ignored."""
        if objective != "clm":
            raise ConfigError(f"the Transformer baseline is causal: objective must be 'clm', "
                              f"got {objective!r}")
        logits = self.forward(input_ids).logits[:, :-1]
        return token_cross_entropy(logits, loss_targets(input_ids, labels, objective), reduction)

    @torch.no_grad()
    def generate(self, prompt_ids: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, stop_token: int | None = None
                 ) -> Tensor:
        """Continue prompts (B, P) by up to max_new_tokens, as XLSTMLanguageModel.generate does."""
        cache = KVCache()
        logits = self.forward(prompt_ids, cache=cache).logits[:, -1]
        tokens = [prompt_ids]
        done = torch.zeros(prompt_ids.shape[0], dtype=torch.bool, device=prompt_ids.device)
        for i in range(max_new_tokens):
            next_ids = sample_next(logits, temperature, top_k, top_p, generator)
            if stop_token is not None:
                next_ids = torch.where(done, torch.full_like(next_ids, stop_token), next_ids)
                done |= next_ids == stop_token
            tokens.append(next_ids[:, None])
            if i + 1 == max_new_tokens or (stop_token is not None and bool(done.all())):
                break
            logits = self.step(next_ids, cache)
        return torch.cat(tokens, dim=1)


def transformer_like(n_params: int, vocab_size: int, context_length: int, *,
                     num_heads: int = 4, d_model: int | None = None, tolerance: float = 0.1,
                     **overrides: object) -> TransformerConfig:
    """A config of >= 2 layers within tolerance of n_params (else closest), width/depth near 64."""
    step = math.lcm(16, 2 * num_heads)
    widths = [d_model] if d_model else range(step, 8193, step)
    best: tuple[float, TransformerConfig] | None = None
    for d in widths:
        for layers in range(2, 65):
            config = TransformerConfig(vocab_size=vocab_size, d_model=d, num_layers=layers,
                                       num_heads=num_heads, context_length=context_length,
                                       **overrides)
            error = abs(config.num_parameters() / n_params - 1)
            shape = abs(math.log(d / layers / 64))
            score = shape if error <= tolerance else 1e3 + error
            if best is None or score < best[0]:
                best = (score, config)
    assert best is not None
    return best[1]
