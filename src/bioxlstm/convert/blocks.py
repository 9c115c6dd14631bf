"""Key rules for the xLSTM model itself, shared by the three families (all three carry copies of
the NX-AI xLSTM code): official module names -> bioxlstm's, and how each tensor is re-laid.

Keys are relative to the official xLSTMLMModel (the family's prefix already removed). RCPS models
(DNA-xLSTM `rcps`) wrap norms, sLSTM layers and FFNs in a module whose parameters sit under
`submodule.`, and their embedding and head one level deeper.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bioxlstm.config import ModelConfig
from bioxlstm.convert.keys import Rule, Transform, pad_rows, squeeze_conv, stack

STACK = "xlstm_block_stack.blocks.\\1."


def _blocks(indices: list[int]) -> str:
    """A key pattern matching the given blocks, the block index as group 1."""
    return r"stack\.blocks\.(" + "|".join(map(str, indices)) + r")\."


def mlstm_rules(indices: list[int]) -> list[Rule]:
    """mLSTM blocks: names differ, layouts agree (the conv weight drops its middle axis)."""
    if not indices:
        return []
    b, x = _blocks(indices), STACK + "xlstm."
    return [
        Rule(b + r"norm\.weight", (STACK + "xlstm_norm.weight",)),
        Rule(b + r"layer\.(proj_up|proj_down)\.(weight|bias)", (x + r"\2.\3",)),
        Rule(b + r"layer\.([qkv]_proj)\.weight", (x + r"\2.weight",)),
        Rule(b + r"layer\.qkv_bias", (x + "q_proj.bias", x + "k_proj.bias", x + "v_proj.bias"), stack),
        Rule(b + r"layer\.conv\.weight", (x + "conv1d.conv.weight",), squeeze_conv),
        Rule(b + r"layer\.conv\.bias", (x + "conv1d.conv.bias",)),
        Rule(b + r"layer\.([if]gate)\.(weight|bias)", (x + r"mlstm_cell.\2.\3",)),
        Rule(b + r"layer\.out_norm\.weight", (x + "mlstm_cell.outnorm.weight",)),
        Rule(b + r"layer\.skip", (x + "learnable_skip",)),
    ]


def slstm_rules(indices: list[int], layout: str, wrap: str = "") -> list[Rule]:
    """sLSTM blocks and their FFN. `layout` is the backend that wrote the cell ("cuda"/"vanilla"):
    bioxlstm keeps the CUDA layout, R (NH, DH, 4 DH) and the bias as (4, NH, DH)."""
    if not indices:
        return []
    b, x = _blocks(indices), STACK + "xlstm" + wrap + "."
    vanilla = layout == "vanilla"

    def recurrent(ts: list[Tensor], shape: torch.Size) -> Tensor:
        return ts[0].transpose(1, 2) if vanilla else ts[0]

    def bias(ts: list[Tensor], shape: torch.Size) -> Tensor:
        _, NH, DH = shape
        flat = ts[0].reshape(-1)
        return flat.view(4, NH, DH) if vanilla else flat.view(NH, 4, DH).transpose(0, 1)

    return [
        Rule(b + r"norm\.weight", (STACK + "xlstm_norm" + wrap + ".weight",)),
        Rule(b + r"layer\.recurrent", (x + "slstm_cell._recurrent_kernel_",), recurrent),
        Rule(b + r"layer\.bias", (x + "slstm_cell._bias_",), bias),
        # the official layer feeds its module named fgate into the input gate, igate into the forget gate
        Rule(b + r"layer\.igate\.weight", (x + "fgate.weight",)),
        Rule(b + r"layer\.fgate\.weight", (x + "igate.weight",)),
        Rule(b + r"layer\.([zo]gate)\.weight", (x + r"\2.weight",)),
        Rule(b + r"layer\.conv\.weight", (x + "conv1d.conv.weight",), squeeze_conv),
        Rule(b + r"layer\.conv\.bias", (x + "conv1d.conv.bias",)),
        Rule(b + r"layer\.out_norm\.weight", (x + "group_norm.weight",)),
        Rule(b + r"ffn_norm\.weight", (STACK + "ffn_norm" + wrap + ".weight",)),
        Rule(b + r"ffn\.(proj_up|proj_down)\.weight", (STACK + "ffn" + wrap + r".\2.weight",)),
    ]


def model_rules(config: ModelConfig, layout: str = "cuda", rcps: bool = False,
                rows: tuple[Transform, Transform] = (pad_rows, pad_rows)) -> list[Rule]:
    """Every rule of an xLSTM LM: embedding, blocks, final norm, head.

    `rows` re-lay the embedding's and the head's rows (default: zero rows up to bioxlstm's padding).
    """
    wrap = ".submodule" if rcps else ""
    slstm = list(config.slstm_at)
    mlstm = [j for j in range(config.num_blocks) if j not in slstm]
    return [
        Rule(r"embedding\.weight", ("token_embedding" + (".embedding" if rcps else "") + ".weight",),
             rows[0]),
        Rule(r"head\.weight", ("lm_head" + (".lm_head" if rcps else "") + ".weight",), rows[1]),
        Rule(r"norm\.weight", ("xlstm_block_stack.post_blocks_norm" + wrap + ".weight",)),
        *mlstm_rules(mlstm),
        *slstm_rules(slstm, layout, wrap),
    ]
