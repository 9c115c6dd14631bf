"""Chem-xLSTM (ml-jku/Chem-xLSTM, `chemxlstm/model.py`): `model.pt` + `init_arguments.json` as a
bioxlstm config, state dict and SMILES tokenizer.

The official vocabulary (`token2label`: [PAD] 0, then tokens by first appearance, no [UNK]) is
re-ordered into bioxlstm's ([PAD] [BEG] [END] [UNK], then the others in official order, then
placeholders for embedding rows no token uses); the embedding and head rows are permuted the same
way, so every official token keeps its trained row. An [UNK] row is added when the official
vocabulary has none: its embedding is [PAD]'s (the official code feeds unknown tokens as [PAD]) and
its logit is masked to -inf, so log-probabilities over the official rows are unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bioxlstm.config import ModelConfig
from bioxlstm.convert.blocks import model_rules
from bioxlstm.convert.keys import Transform, map_state, pad_rows, strip_prefix
from bioxlstm.convert.loading import load_weights_file
from bioxlstm.convert.result import Converted, expected_shapes, with_source
from bioxlstm.convert.sources import OfficialSource
from bioxlstm.errors import ConfigError, ConversionError
from bioxlstm.io import read_json
from bioxlstm.smiles import CHEM_XLSTM_REGEX, PAD, SPECIALS, UNK, SmilesTokenizer

PREFIX = "model."
HEADS_KEY = "xlstm_block_stack.blocks.0.xlstm.mlstm_cell.igate.weight"
REQUIRED = ("model_dim", "n_layers", "vocab_size", "sequence_length", "token2label")


def convert_chem(source: OfficialSource) -> Converted:
    """A Chem-xLSTM checkpoint folder as a bioxlstm config, state dict and tokenizer."""
    args = read_arguments(source.config)
    tokenizer, order = vocabulary(args, source.config)
    state = load_weights_file(source.weights)
    config = model_config(args, heads(state, source.weights), len(tokenizer), source.config)
    weights = convert_state(state, config, order, source.weights)
    kept = {k: v for k, v in args.items() if k not in ("token2label", "label2token")}
    return Converted(with_source(config, source, kept, source.config.name), weights, tokenizer)


def convert_state(state: dict[str, Tensor], config: ModelConfig, order: list[int | None],
                  path: Path) -> dict[str, Tensor]:
    """bioxlstm's state dict from Chem-xLSTM's (keys `model.<xLSTMLMModel key>`), the vocabulary
    rows in bioxlstm's `order` (from `vocabulary`)."""
    state = strip_prefix(state, PREFIX, path)
    rows = (_rows(order, zero_unk=False), _rows(order, zero_unk=True))
    return map_state(state, expected_shapes(config), model_rules(config, rows=rows), path, PREFIX)


def read_arguments(path: Path) -> dict[str, Any]:
    """init_arguments.json, checked to describe an xLSTM SMILES model."""
    args = read_json(path, ConversionError)
    if not isinstance(args, dict):
        raise ConversionError(f"{path}: expected a JSON object (Chem-xLSTM's init arguments)")
    model_class = str(args.get("model_class", "xLSTMModel"))
    if "xLSTMModel" not in model_class or "sLSTM" in model_class:
        raise ConversionError(f"{path}: model_class {model_class!r} is not Chem-xLSTM's mLSTM "
                              f"xLSTMModel; the converter knows only that architecture")
    if args.get("mode", "smiles") != "smiles":
        raise ConversionError(f"{path}: mode {args['mode']!r} is not supported (only 'smiles')")
    absent = [key for key in REQUIRED if key not in args]
    if absent:
        raise ConversionError(f"{path}: missing field(s) {absent}")
    return args


def heads(state: dict[str, Tensor], path: Path) -> int:
    """The mLSTM head count: the gates' rows (init_arguments.json records 1 or nothing)."""
    if PREFIX + HEADS_KEY not in state:
        raise ConversionError(f"{path}: missing key(s): {PREFIX}{HEADS_KEY}")
    return int(state[PREFIX + HEADS_KEY].shape[0])


def vocabulary(args: dict[str, Any], path: Path) -> tuple[SmilesTokenizer, list[int | None]]:
    """bioxlstm's tokenizer and, per bioxlstm id, the official row it takes (None: the added [UNK])."""
    t2l, rows = args["token2label"], args["vocab_size"]
    if not isinstance(t2l, dict) or not all(isinstance(t, str) and isinstance(j, int)
                                            for t, j in t2l.items()):
        raise ConversionError(f"{path}: token2label must map tokens to integer ids")
    ids = sorted(t2l.values())
    if ids != list(range(len(ids))) or len(ids) > rows or t2l.get(PAD) != 0:
        raise ConversionError(f"{path}: token2label must give [PAD] id 0 and ids 0..n-1 (n <= "
                              f"vocab_size {rows})")
    absent = [t for t in SPECIALS if t != UNK and t not in t2l]
    if absent:
        raise ConversionError(f"{path}: token2label lacks {absent}")
    by_id = {j: t for t, j in t2l.items()}
    tokens = {j: by_id.get(j, f"[unused{j}]") for j in range(rows)}
    order: list[int | None] = [t2l[t] if t in t2l else None for t in SPECIALS]
    order += [j for j in range(rows) if tokens[j] not in SPECIALS]
    names = [tokens[j] if j is not None else UNK for j in order]
    return SmilesTokenizer(tuple(names), CHEM_XLSTM_REGEX), order


def _rows(order: list[int | None], zero_unk: bool) -> Transform:
    """The transform putting official rows into bioxlstm's order, then zero padding rows.
    The added [UNK] row (None in `order`) is [PAD]'s embedding, or a zero head row."""

    def transform(tensors: list[Tensor], shape: torch.Size) -> Tensor:
        t = tensors[0]
        if t.dim() != 2:
            return t
        pad = order[SPECIALS.index(PAD)]
        index = torch.tensor([pad if j is None else j for j in order], device=t.device)
        out = t.index_select(0, index)
        if zero_unk and None in order:
            out[order.index(None)] = 0
        return pad_rows([out], shape)

    return transform


def model_config(args: dict[str, Any], num_heads: int, vocab_size: int, path: Path) -> ModelConfig:
    """Chem-xLSTM's xLSTMModel: mLSTM blocks, proj_factor 2, no bias, no positions, no dropout
    (its recorded dropout is overwritten by the xlstm block stack's 0.0 and never applied)."""
    masked = [] if UNK in args["token2label"] else [SPECIALS.index(UNK)]
    try:
        return ModelConfig(
            vocab_size=vocab_size, alphabet="smiles", d_model=args["model_dim"],
            num_blocks=args["n_layers"], mlstm_heads=num_heads,
            context_length=args["sequence_length"], dropout=0.0, embedding_dropout=False,
            masked_token_ids=masked)
    except (ConfigError, TypeError, ValueError) as err:
        raise ConversionError(f"{path}: {err}") from None
