"""The residual blocks of docs/model.md sections 2-3: mLSTM block (pre-up-projection), sLSTM block + FFN.

Each block maps (B, S, d) -> (B, S, d) and can carry its state across calls. With
`bidirectional=True` the mixer runs on x and on the reversed x with the same weights and the two
results are added once to the residual stream (docs/model.md section 6, the clean design).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bioxlstm.config import ModelConfig
from bioxlstm.layers.backends import mlstm_kernel
from bioxlstm.layers.dense import linear, split_linear
from bioxlstm.layers.gelu_gate import gelu_gate
from bioxlstm.layers.mlstm import mlstm_step
from bioxlstm.layers.mlstm_inputs import mlstm_inputs
from bioxlstm.layers.mlstm_output_gate import output_gate
from bioxlstm.layers.primitives import (
    BlockDiagonalLinear,
    CausalConv1d,
    LayerNorm,
    MultiHeadNorm,
    rotary,
    small_init_,
    wang_init_,
)
from bioxlstm.layers.slstm import slstm_scan
from bioxlstm.layers.slstm_inputs import slstm_inputs
from bioxlstm.layers.variants import flip_rc_heads, qkv_bias_terms, rotary_variant
from bioxlstm.strands import reverse

BlockState = Any


def mixer_dtype(x: Tensor) -> torch.dtype:
    """float32 for half-precision activations on CPU, else x's dtype.

    On CPU only the dense projections gain from bfloat16 (autocast or bfloat16 weights); the
    mLSTM's conv, gates, cell and output gate run faster and more accurately in the float32
    kernels, so half-precision activations are widened between the two projections.
    """
    if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return x.dtype


class MLSTMLayer(nn.Module):
    """Up-projection, causal conv, q/k/v, gates, mLSTM cell, per-head norm, skip, down-projection."""

    def __init__(self, config: ModelConfig, block_index: int):
        super().__init__()
        d, D, NH = config.d_model, config.mlstm_inner_dim, config.mlstm_heads
        self.config = config
        self.num_heads = NH
        self.proj_up = nn.Linear(d, 2 * D, bias=config.mlstm_bias)
        self.conv = CausalConv1d(D, config.conv_kernel)
        self.q_proj = BlockDiagonalLinear(D, config.qkv_blocksize)
        self.k_proj = BlockDiagonalLinear(D, config.qkv_blocksize)
        self.v_proj = BlockDiagonalLinear(D, config.qkv_blocksize)
        self.igate = nn.Linear(3 * D, NH)
        self.fgate = nn.Linear(3 * D, NH)
        self.out_norm = MultiHeadNorm(NH, D // NH)
        self.skip = nn.Parameter(torch.ones(D))
        self.proj_down = nn.Linear(D, d, bias=config.mlstm_bias)
        self.dropout = nn.Dropout(config.dropout)
        if config.mlstm_bias:
            self._init_biases(D)
        with torch.no_grad():
            small_init_(self.proj_up.weight, d)
            for proj in (self.q_proj, self.k_proj, self.v_proj):
                small_init_(proj.weight, d)
            wang_init_(self.proj_down.weight, d, config.num_blocks)
            nn.init.zeros_(self.igate.weight)
            nn.init.normal_(self.igate.bias, std=0.1)
            nn.init.zeros_(self.fgate.weight)
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, NH))

    def _init_biases(self, D: int) -> None:
        """DNA-xLSTM's `m_bias`: biases on the up-projection, q, k, v and the down-projection."""
        self.qkv_bias = nn.Parameter(torch.zeros(3, D))
        with torch.no_grad():
            self.proj_up.bias.zero_()
            self.proj_down.bias.zero_()

    def _up(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The up-projection's two halves: the mLSTM branch x_m and the output gate z."""
        x_m, z = split_linear(x, self.proj_up.weight)
        if self.proj_up.bias is None:
            return x_m, z
        b_m, b_z = self.proj_up.bias.to(x_m.dtype).chunk(2)
        return x_m + b_m, z + b_z

    def _rotate(self, q: Tensor, k: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        """RoPE on q and k (B, NH, S, DH): bioxlstm's, or a variant of the official code's."""
        cfg = self.config
        if cfg.rope_max_position is not None:  # Prot-xLSTM's data pipeline clamps positions
            position_ids = position_ids.clamp(max=cfg.rope_max_position)
        if (cfg.rope_pairing, cfg.rope_scope, cfg.rope_freq_form) == ("half", "head", "power"):
            return rotary(q, position_ids, cfg.rope_theta), rotary(k, position_ids, cfg.rope_theta)
        variant = (cfg.rope_theta, cfg.rope_pairing, cfg.rope_scope, cfg.rope_freq_form)
        return rotary_variant(q, position_ids, *variant), rotary_variant(k, position_ids, *variant)

    def _gates(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Gate pre-activations i, f (B, NH, S) from q, k, v (B, NH, S, DH) as they are now.

        Prot-xLSTM computes the gates after RoPE, from the rotated q and k (`rope_before_gates`).
        """
        qkv = torch.cat([t.transpose(1, 2).flatten(2) for t in (q, k, v)], dim=-1)
        W = torch.cat([self.igate.weight, self.fgate.weight]).to(qkv.dtype)
        b = torch.cat([self.igate.bias, self.fgate.bias]).to(qkv.dtype)
        return F.linear(qkv, W, b).transpose(1, 2).split(self.num_heads, dim=1)

    def _inputs(self, x_m: Tensor, conv_state: Tensor | None) -> tuple[Tensor, ...]:
        """c = silu(conv(x_m)), q, k, v (B, S, D), gates i, f (B, NH, S) and the new conv state."""
        if conv_state is None:
            conv_state = x_m.new_zeros(x_m.shape[0], self.conv.kernel_size - 1, x_m.shape[2])
        W = torch.cat([self.igate.weight, self.fgate.weight]).to(x_m.dtype)
        b = torch.cat([self.igate.bias, self.fgate.bias]).to(x_m.dtype)
        weights = [t.to(x_m.dtype) for t in (conv_state, self.conv.weight, self.conv.bias,
                                             self.q_proj.weight, self.k_proj.weight,
                                             self.v_proj.weight)]
        return mlstm_inputs(x_m, *weights, W, b, self.num_heads)

    def forward(
        self, x: Tensor, state: BlockState = None, position_ids: Tensor | None = None
    ) -> tuple[Tensor, BlockState]:
        conv_state, cell_state = (None, None) if state is None else state
        B, S, _ = x.shape
        NH = self.num_heads
        x_m, z = self._up(x)
        proj_dtype, wide = x_m.dtype, mixer_dtype(x_m)
        x_m, z = x_m.to(wide), z.to(wide)
        c, q, k, v, i, f, conv_state = self._inputs(x_m, conv_state)
        if self.config.mlstm_bias:
            W = torch.cat([self.igate.weight, self.fgate.weight])
            q, k, v, i, f = qkv_bias_terms(q, k, v, i, f, self.qkv_bias, W)
        q, k, v = (t.view(B, S, NH, -1).transpose(1, 2) for t in (q, k, v))
        if self.config.rope:
            if position_ids is None:
                position_ids = torch.arange(S, device=x.device).expand(B, S)
            q, k = self._rotate(q, k, position_ids)
            if self.config.rope_before_gates:
                i, f = self._gates(q, k, v)
        if S == 1 and cell_state is not None:
            h, cell_state = mlstm_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], i[:, :, 0], f[:, :, 0],
                                       cell_state)
            h = h.unsqueeze(2)
        else:
            kernel = mlstm_kernel(self.config.mlstm_form)
            h, cell_state = kernel(q, k, v, i, f, cell_state, self.config.chunk_size)
        h = h.transpose(1, 2)  # (B, S, NH, DH)
        y = output_gate(h, c, z, self.out_norm.weight, self.skip, self.out_norm.eps)
        y = linear(y.to(proj_dtype), self.proj_down.weight, self.proj_down.bias)
        return self.dropout(y), (conv_state, cell_state)


class SLSTMLayer(nn.Module):
    """Causal conv feeding the i/f gates, head-wise input projections, sLSTM cell, per-head norm."""

    def __init__(self, config: ModelConfig, block_index: int):
        super().__init__()
        d, NH = config.d_model, config.slstm_heads
        DH = d // NH
        self.num_heads, self.head_dim = NH, DH
        self.rc_head_flip = config.rcps_slstm_head_flip
        self.conv = CausalConv1d(d, config.conv_kernel)
        self.igate = BlockDiagonalLinear(d, DH)
        self.fgate = BlockDiagonalLinear(d, DH)
        self.zgate = BlockDiagonalLinear(d, DH)
        self.ogate = BlockDiagonalLinear(d, DH)
        self.recurrent = nn.Parameter(torch.zeros(NH, DH, 4 * DH))
        self.bias = nn.Parameter(torch.zeros(4, NH, DH))
        self.out_norm = MultiHeadNorm(NH, DH)
        self.dropout = nn.Dropout(config.dropout)
        ratio = block_index / (config.num_blocks - 1) if config.num_blocks > 1 else 0.0
        with torch.no_grad():
            for gate in (self.igate, self.fgate, self.zgate, self.ogate):
                small_init_(gate.weight, d)
            x = torch.arange(DH, dtype=torch.float64) / max(DH - 1, 1)
            self.bias[1].copy_((5.0 - 12.0 * x ** (0.3 + 1.3 * ratio)).to(torch.float32))

    def _gate_inputs(self, x: Tensor, conv_state: Tensor | None) -> tuple[Tensor, Tensor]:
        """The scan's gate inputs wx (B, S, 4, NH, DH) and the new conv state."""
        if conv_state is None:
            conv_state = x.new_zeros(x.shape[0], self.conv.kernel_size - 1, x.shape[2])
        W = torch.stack([g.weight for g in (self.igate, self.fgate, self.zgate, self.ogate)])
        return slstm_inputs(x, conv_state.to(x.dtype), self.conv.weight, self.conv.bias, W)

    def forward(
        self, x: Tensor, state: BlockState = None, position_ids: Tensor | None = None
    ) -> tuple[Tensor, BlockState]:
        conv_state, cell_state = (None, None) if state is None else state
        wx, conv_state = self._gate_inputs(x, conv_state)
        h, cell_state = slstm_scan(wx, self.recurrent, self.bias, cell_state)
        if self.rc_head_flip:
            h = flip_rc_heads(h)
        return self.out_norm(self.dropout(h)), (conv_state, cell_state)


class GatedFFN(nn.Module):
    """x -> W_down(GELU(W_g x) * W_u x), the feed-forward of sLSTM blocks."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d, up = config.d_model, config.ffn_inner_dim
        self.proj_up = nn.Linear(d, 2 * up, bias=False)
        self.proj_down = nn.Linear(up, d, bias=False)
        self.dropout = nn.Dropout(config.dropout if config.ffn_dropout else 0.0)
        with torch.no_grad():
            small_init_(self.proj_up.weight, d)
            wang_init_(self.proj_down.weight, d, config.num_blocks)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = split_linear(x, self.proj_up.weight)
        hidden = gelu_gate(gate, up)
        return self.dropout(linear(hidden, self.proj_down.weight))


class XLSTMBlock(nn.Module):
    """Pre-norm residual block around an mLSTM or sLSTM layer (sLSTM blocks add the gated FFN)."""

    def __init__(self, config: ModelConfig, block_index: int):
        super().__init__()
        self.kind = "slstm" if block_index in config.slstm_at else "mlstm"
        self.whole_block_both_ways = config.bidirectional_form == "official"
        self.norm = LayerNorm(config.d_model)
        layer_cls = SLSTMLayer if self.kind == "slstm" else MLSTMLayer
        self.layer = layer_cls(config, block_index)
        if self.kind == "slstm":
            self.ffn_norm = LayerNorm(config.d_model)
            self.ffn = GatedFFN(config)

    def forward(
        self,
        x: Tensor,
        state: BlockState = None,
        position_ids: Tensor | None = None,
        bidirectional: bool = False,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor, BlockState]:
        if bidirectional and self.whole_block_both_ways:
            return self._whole_block_both_ways(x, position_ids, lengths), None
        u = self.norm(x)
        y, state = self.layer(u, state, position_ids)
        if bidirectional:
            y_rev, _ = self.layer(reverse(u, lengths), None, position_ids)
            y = y + reverse(y_rev, lengths)
        x = x + y
        if self.kind == "slstm":
            x = x + self.ffn(self.ffn_norm(x))
        return x, state

    def _whole_block_both_ways(self, x: Tensor, position_ids: Tensor | None,
                               lengths: Tensor | None) -> Tensor:
        """DNA-xLSTM's bidirectional block: block(x) + rev(block(rev(x))) with the whole block,
        so the residual counts twice and sLSTM blocks run their FFN on each direction's stream."""
        fwd, _ = self(x, None, position_ids)
        bwd, _ = self(reverse(x, lengths), None, position_ids)
        return fwd + reverse(bwd, lengths)
