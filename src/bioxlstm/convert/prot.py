"""Prot-xLSTM (ml-jku/Prot-xLSTM, `protxlstm/models/xlstm.py`): a trainer checkpoint folder
(`config.json` = xLSTMLMModelConfig, `pytorch_model.bin`) as a bioxlstm config and state dict.

Its RoPE ("rot_1d") rotates interleaved channel pairs of q and k over the whole mLSTM inner width
before the head split and computes the gates from the rotated q and k; positions come from the
`position_ids` input (restarting at every <cls>), which bioxlstm's protein pipeline produces the
same way. `seq_position_ids` only matter for the "abs_2d"/"rot_2d" encodings, which are refused.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch import Tensor

from bioxlstm.config import PROTEIN_VOCAB, ModelConfig, round_up
from bioxlstm.convert.blocks import model_rules
from bioxlstm.convert.keys import map_state, strip_prefix
from bioxlstm.convert.loading import load_weights_file
from bioxlstm.convert.result import Converted, expected_shapes, with_source
from bioxlstm.convert.sources import OfficialSource
from bioxlstm.errors import ConfigError, ConversionError
from bioxlstm.io import read_json

PREFIX = "backbone."
# xLSTMLMModelConfig's fields (and xLSTMBlockStackConfig's) at commit 5aa8ddf, with their defaults
TOP = dict(mlstm_block=None, slstm_block=None, context_length=-1, num_blocks=1, embedding_dim=128,
           add_post_blocks_norm=True, bias=False, dropout=0.0, checkpoint_blocks=False, slstm_at=[],
           _block_map=None, vocab_size=-1, tie_weights=False, weight_decay_on_embedding=False,
           add_embedding_dropout=False, position_embeddings="none", max_position_embeddings=2048,
           max_seq_position_embeddings=512, rope_base_frequency=10_000)
MLSTM = dict(conv1d_kernel_size=4, qkv_proj_blocksize=4, num_heads=4, proj_factor=2.0,
             round_proj_up_dim_up=True, round_proj_up_to_multiple_of=64, _proj_up_dim=None,
             embedding_dim=-1, bias=False, dropout=0.0, context_length=-1, backend="parallel",
             chunk_size=64, return_last_state=False, _num_blocks=1, _inner_embedding_dim=None)
ENCODINGS = ("none", "rot_1d")  # the other position encodings add tables bioxlstm does not have


def convert_prot(source: OfficialSource) -> Converted:
    """A Prot-xLSTM checkpoint folder as a bioxlstm config and state dict."""
    raw = read_config(source.config)
    config = model_config(raw, source.config)
    weights = convert_state(load_weights_file(source.weights), config, source.weights)
    return Converted(with_source(config, source, raw, source.config.name), weights)


def convert_state(state: dict[str, Tensor], config: ModelConfig, path: Path) -> dict[str, Tensor]:
    """bioxlstm's state dict from Prot-xLSTM's (keys `backbone.<xLSTMLMModel key>`)."""
    state = strip_prefix(state, PREFIX, path)
    return map_state(state, expected_shapes(config), model_rules(config), path, PREFIX)


def read_config(path: Path) -> dict[str, Any]:
    """config.json as a mapping (the dataclasses.asdict of xLSTMLMModelConfig)."""
    data = read_json(path, ConversionError, "JSON config")
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected a JSON object (Prot-xLSTM's xLSTMLMModelConfig)")
    return data


def model_config(raw: dict[str, Any], path: Path) -> ModelConfig:
    """The bioxlstm config computing what Prot-xLSTM builds from config.json."""
    top, mlstm = _fields(raw, path)
    d = top["embedding_dim"]
    encoding = top["position_embeddings"]
    rope = encoding == "rot_1d"
    try:
        return ModelConfig(
            vocab_size=PROTEIN_VOCAB, alphabet="protein", d_model=d, num_blocks=top["num_blocks"],
            mlstm_heads=mlstm["num_heads"], proj_factor=mlstm["proj_factor"],
            conv_kernel=mlstm["conv1d_kernel_size"], qkv_blocksize=mlstm["qkv_proj_blocksize"],
            dropout=top["dropout"], context_length=max(1, top["context_length"]),
            rope=rope, rope_theta=float(top["rope_base_frequency"]),
            rope_pairing="interleaved" if rope else "half", rope_scope="inner" if rope else "head",
            rope_before_gates=rope, mlstm_bias=bool(top["bias"]), mlstm_dim=_inner_dim(mlstm, d),
            rope_max_position=top["max_position_embeddings"] - 1 if rope else None,
            embedding_dropout=bool(top["add_embedding_dropout"]))
    except (ConfigError, TypeError, ValueError) as err:
        raise ConversionError(f"{path}: {err}") from None


def _fields(raw: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Top-level and mLSTM-layer fields with defaults; unknown fields and architectures refused."""
    unknown = sorted(set(raw) - set(TOP))
    block = raw.get("mlstm_block")
    if unknown or not isinstance(block, dict) or not isinstance(block.get("mlstm", {}), dict):
        what = f"unknown field(s) {unknown}" if unknown else "no mlstm_block"
        raise ConversionError(f"{path}: not a Prot-xLSTM xLSTMLMModelConfig ({what})")
    layer = block.get("mlstm", {})
    unknown = sorted(set(layer) - set(MLSTM))
    if unknown:
        raise ConversionError(f"{path}: unknown mlstm_block.mlstm field(s) {unknown}")
    top, mlstm = {**TOP, **raw}, {**MLSTM, **layer}
    if top["position_embeddings"] not in ENCODINGS:
        raise ConversionError(f"{path}: position_embeddings {top['position_embeddings']!r} is not "
                              f"supported (bioxlstm implements {ENCODINGS})")
    if not top["add_post_blocks_norm"]:
        raise ConversionError(f"{path}: add_post_blocks_norm false is not supported")
    if top["vocab_size"] != PROTEIN_VOCAB:
        raise ConversionError(f"{path}: vocab_size {top['vocab_size']} is not the {PROTEIN_VOCAB} "
                              f"tokens of Prot-xLSTM's alphabet")
    if any(c not in "0," for c in str(top["_block_map"] or "")):
        raise ConversionError(f"{path}: _block_map {top['_block_map']!r} has sLSTM blocks; "
                              f"Prot-xLSTM models are mLSTM only")
    return top, mlstm


def _inner_dim(mlstm: dict[str, Any], d: int) -> int | None:
    """The mLSTM inner width Prot-xLSTM uses; None when bioxlstm computes the same."""
    raw, multiple = mlstm["proj_factor"] * d, mlstm["round_proj_up_to_multiple_of"]
    rounded = math.ceil(raw / multiple) if mlstm["round_proj_up_dim_up"] else math.floor(raw / multiple)
    official = mlstm["_inner_embedding_dim"] or rounded * multiple
    return None if official == round_up(raw, 64) else official
