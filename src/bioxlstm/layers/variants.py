"""How the official Bio-xLSTM code computes some layers differently, for converted checkpoints.

Each function here is one behaviour of the authors' code that a config option switches on
(docs/pretrained.md lists them); bioxlstm's own models never call them with the default config.
"""

from __future__ import annotations

import torch
from torch import Tensor


def inverse_frequencies(width: int, theta: float, form: str, device: torch.device) -> Tensor:
    """theta^(-2j/width) for j < width/2 in float32: as a power (Prot-xLSTM, bioxlstm) or as
    1 / theta^(2j/width) (DNA-xLSTM); the two differ in the last bit, which matters at 32k positions."""
    exponents = torch.arange(0, width, 2, device=device, dtype=torch.float32) / width
    return 1.0 / theta ** exponents if form == "reciprocal" else theta ** -exponents


def rotary_variant(x: Tensor, position_ids: Tensor, theta: float, pairing: str = "half",
                   scope: str = "head", freq_form: str = "power") -> Tensor:
    """RoPE on x (B, NH, S, DH) at positions (B, S), in float32 like both official codes.

    pairing "interleaved" rotates channel pairs (2j, 2j+1) instead of (j, j + DH/2); scope "inner"
    spreads the frequencies over all heads' width NH*DH (Prot-xLSTM rotates q, k before the head
    split), so head h uses band h of that table instead of the same per-head table.
    """
    B, NH, S, DH = x.shape
    width = DH * NH if scope == "inner" else DH
    inv_freq = inverse_frequencies(width, theta, freq_form, x.device).view(-1, DH // 2)
    angles = position_ids.to(torch.float32)[:, None, :, None] * inv_freq[None, :, None, :]
    cos, sin = angles.cos(), angles.sin()  # (B, NH or 1, S, DH/2)
    xf = x.float()
    if pairing == "interleaved":
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
        out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    else:
        x1, x2 = xf[..., : DH // 2], xf[..., DH // 2:]
        out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


def flip_rc_heads(h: Tensor) -> Tensor:
    """DNA-xLSTM's RCPS sLSTM quirk: the reverse-complement rows (the second half of the batch
    in an RC-equivariant model) reverse their head order before the per-head norm. h: (B, S, NH, DH).

    It breaks exact RC equivariance; converted "ps" models need it to compute what they were trained as.
    """
    fwd, rc = h.chunk(2)
    return torch.cat([fwd, rc.flip(-2)])


def qkv_bias_terms(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, bias: Tensor,
                   gate_weight: Tensor) -> tuple[Tensor, ...]:
    """DNA-xLSTM's `m_bias`: q, k, v (B, S, D) get biases `bias` (3, D), and the gate
    pre-activations i, f (B, NH, S) what those biases add through gate_weight (2 NH, 3 D).

    The gates are linear in [q; k; v], so adding W [b_q; b_k; b_v] equals computing them from the
    biased q, k, v, and the fused input kernel needs no bias support.
    """
    extra = (gate_weight.to(bias.dtype) @ bias.reshape(-1)).to(i.dtype)
    di, df = extra.chunk(2)
    bq, bk, bv = (b.to(q.dtype) for b in bias)
    return q + bq, k + bk, v + bv, i + di[:, None], f + df[:, None]


def mask_logits(logits: Tensor, token_ids: list[int]) -> Tensor:
    """Logits with the listed vocabulary entries at -inf: rows a converter added (Chem-xLSTM's
    [UNK]) that the official model never had, so they take no probability."""
    if not token_ids:
        return logits
    index = torch.tensor(token_ids, device=logits.device)
    return logits.index_fill(-1, index, float("-inf"))
