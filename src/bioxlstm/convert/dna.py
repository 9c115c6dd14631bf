"""DNA-xLSTM (ml-jku/DNA-xLSTM, `models/dna_xlstm/modelling_xlstm.py`): its `xLSTMConfig` and
Lightning state dict as a bioxlstm config and state dict.

The config's fields are those of xLSTMConfig at commit 06820ec; a field this module does not know,
an option bioxlstm does not implement, or a model that is not the xLSTM LM is refused by name.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch import Tensor

from bioxlstm.alphabets import DNA
from bioxlstm.config import DNA_VOCAB, ModelConfig, round_up
from bioxlstm.convert.blocks import model_rules
from bioxlstm.convert.keys import map_state, strip_prefix
from bioxlstm.convert.loading import load_pickle, plain, tensor_dict
from bioxlstm.convert.result import Converted, expected_shapes, with_source
from bioxlstm.convert.sources import OfficialSource
from bioxlstm.errors import ConfigError, ConversionError
from bioxlstm.io import read_json

PREFIX = "model.backbone."
TARGET = "modelling_xlstm.xLSTMConfig"
# xLSTMConfig's keyword defaults: what a field missing from a config file means
DEFAULTS: dict[str, Any] = dict(
    d_model=256, n_layer=4, tie_weights=False, max_length=1024, vocab_size=16,
    pad_vocab_size_multiple=8, m_conv1d_kernel_size=4, m_conv1d_causal=True, m_qkv_proj_blocksize=4,
    m_num_heads=4, m_proj_factor=2.0, m_backend="parallel", m_chunk_size=64,
    m_position_embeddings=False, m_bias=False, s_num_heads=4, s_conv1d_kernel_size=4,
    s_conv1d_causal=True, s_lstm_at=[], s_proj_factor=1.3, s_round_proj_up_dim_up=True,
    s_round_proj_up_to_multiple_of=64, s_position_embeddings=False, dropout=0.0,
    bidirectional=False, bidirectional_alternating=False, m_backend_bidirectional=False,
    rcps=False, complement_map=None, s_backend="cuda")
# options of the official code that bioxlstm does not implement, with the only value it accepts
NOT_IMPLEMENTED = {"m_conv1d_causal": True, "s_conv1d_causal": True, "s_position_embeddings": False,
                   "bidirectional_alternating": False, "m_backend_bidirectional": False}


def convert_dna(source: OfficialSource) -> Converted:
    """A DNA-xLSTM Lightning checkpoint as a bioxlstm config and state dict."""
    state, raw, config_from = read_checkpoint(source)
    where = source.config or source.weights
    fields = official_fields(raw, where)
    config = model_config(fields, where)
    weights, layout = convert_state(state, config, source.weights)
    if any(k.endswith("_recurrent_kernel_") for k in state) and "s_backend" in raw \
            and raw["s_backend"] != layout:
        raise ConversionError(f"{source.weights}: the config names the {raw['s_backend']} sLSTM "
                              f"backend but the recurrent kernels have the {layout} layout")
    config = with_source(config, source, raw, config_from, slstm_layout=layout if config.slstm_at
                         else None)
    return Converted(config, weights)


def read_checkpoint(source: OfficialSource) -> tuple[dict[str, Tensor], dict[str, Any], str]:
    """The state dict, the xLSTMConfig fields and where they came from (config file or the .ckpt)."""
    ckpt = load_pickle(source.weights, with_omegaconf=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConversionError(f"{source.weights}: not a Lightning checkpoint (no 'state_dict')")
    state = tensor_dict(ckpt["state_dict"], source.weights)
    if source.config is not None:
        return state, _config_file(source.config), source.config.name
    hparams = plain(ckpt.get("hyper_parameters"))
    model = hparams.get("model") if isinstance(hparams, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("config"), dict):
        raise ConversionError(f"{source.weights}: no model_config.json beside it and no model config "
                              f"in its hyper_parameters; give it with --config")
    _check_model_name(model.get("_name_"), source.weights)
    return state, model["config"], "hyper_parameters"


def _config_file(path: Path) -> dict[str, Any]:
    """The xLSTMConfig fields of a model_config.json (or of a file holding just the fields)."""
    data = read_json(path, ConversionError, "JSON config")
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]  # model_config.json wraps the fields in {"config": ...}
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected a JSON object of xLSTMConfig fields")
    return data


def _check_model_name(name: Any, path: Path) -> None:
    """Refuse a Lightning checkpoint of another DNA-xLSTM model (Caduceus, Mamba, HyenaDNA...)."""
    if name is not None and "xlstm" not in str(name).lower():
        raise ConversionError(f"{path}: the checkpoint holds a {name!r} model, not DNA-xLSTM's "
                              f"xLSTM; the converter knows only the xLSTM models")


def official_fields(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """xLSTMConfig's fields with defaults filled in; unknown architectures and fields refused."""
    target = raw.get("_target_")
    if target is not None and not str(target).endswith(TARGET):
        raise ConversionError(f"{path}: the config builds {target}, not DNA-xLSTM's {TARGET}; the "
                              f"converter knows only the xLSTM models")
    fields = {k: v for k, v in raw.items() if k != "_target_"}
    unknown = sorted(set(fields) - set(DEFAULTS))
    if unknown:
        raise ConversionError(f"{path}: unknown DNA-xLSTM config field(s) {unknown}")
    fields = {**DEFAULTS, **fields}
    for key, value in fields.items():
        if isinstance(value, str) and value.startswith("${"):
            raise ConversionError(f"{path}: config field {key} is the unresolved interpolation "
                                  f"{value!r}; give the resolved config with --config")
    for key, allowed in NOT_IMPLEMENTED.items():
        if fields[key] != allowed:
            raise ConversionError(f"{path}: {key}={fields[key]!r} is not supported (bioxlstm "
                                  f"implements only {key}={allowed!r})")
    _check_complement_map(fields["complement_map"], path)
    return fields


def _check_complement_map(found: Any, path: Path) -> None:
    """A complement map in the config (the .ckpt's hparams have one) must be bioxlstm's DNA one."""
    if found is None:
        return
    expected = dict(enumerate(DNA.complement_ids()))
    try:
        same = {int(k): int(v) for k, v in found.items()} == expected
    except (AttributeError, TypeError, ValueError):
        same = False
    if not same:
        raise ConversionError(f"{path}: complement_map {found!r} is not the DNA complement map "
                              f"{expected}")


def model_config(fields: dict[str, Any], path: Path) -> ModelConfig:
    """The bioxlstm config computing what xLSTMConfig(**fields) builds."""
    d, n = fields["d_model"], fields["n_layer"]
    try:
        slstm_at = sorted(int(j) for j in fields["s_lstm_at"])
    except (TypeError, ValueError):
        raise ConversionError(f"{path}: s_lstm_at {fields['s_lstm_at']!r} is not a list of block "
                              f"indices") from None
    has_mlstm, has_slstm = len(slstm_at) < n, bool(slstm_at)
    if fields["vocab_size"] != DNA_VOCAB:
        raise ConversionError(f"{path}: vocab_size {fields['vocab_size']} is not the {DNA_VOCAB} "
                              f"tokens of DNA-xLSTM's character tokenizer")
    if fields["rcps"] and has_mlstm:
        raise ConversionError(f"{path}: rcps with mLSTM blocks is not supported (the official code "
                              f"wraps only sLSTM blocks for RC equivariance)")
    kernels = {fields["m_conv1d_kernel_size"]} if has_mlstm else set()
    kernels |= {fields["s_conv1d_kernel_size"]} if has_slstm else set()
    if len(kernels) > 1:
        raise ConversionError(f"{path}: different mLSTM and sLSTM conv kernel sizes {sorted(kernels)} "
                              f"are not supported")
    rope = bool(fields["m_position_embeddings"]) and has_mlstm
    try:
        return ModelConfig(
            vocab_size=DNA_VOCAB, alphabet="dna", d_model=d, num_blocks=n, slstm_at=slstm_at,
            mlstm_heads=fields["m_num_heads"], slstm_heads=fields["s_num_heads"],
            proj_factor=fields["m_proj_factor"], ffn_proj_factor=fields["s_proj_factor"],
            conv_kernel=kernels.pop(), qkv_blocksize=fields["m_qkv_proj_blocksize"],
            dropout=fields["dropout"], bidirectional=bool(fields["bidirectional"]),
            context_length=fields["max_length"], rc_equivariant=bool(fields["rcps"]),
            rope=rope, rope_pairing="interleaved" if rope else "half",
            rope_freq_form="reciprocal" if rope else "power", mlstm_bias=bool(fields["m_bias"]) and has_mlstm,
            mlstm_dim=_mlstm_dim(fields) if has_mlstm else None,
            ffn_dim=_ffn_dim(fields) if has_slstm else None,
            bidirectional_form="official" if fields["bidirectional"] else "shared_mixer",
            rcps_slstm_head_flip=bool(fields["rcps"]) and has_slstm,
            embedding_dropout=False, ffn_dropout=False)
    except (ConfigError, TypeError, ValueError) as err:
        raise ConversionError(f"{path}: {err}") from None


def _mlstm_dim(fields: dict[str, Any]) -> int | None:
    """The mLSTM inner width, rounded down to 64 as DNA-xLSTM does; None when bioxlstm's equals it."""
    raw = fields["m_proj_factor"] * fields["d_model"]
    official = math.floor(raw / 64) * 64
    return None if official == round_up(raw, 64) else official


def _ffn_dim(fields: dict[str, Any]) -> int | None:
    """The sLSTM FFN width with its own multiple and direction; None when bioxlstm's equals it."""
    raw, multiple = fields["s_proj_factor"] * fields["d_model"], fields["s_round_proj_up_to_multiple_of"]
    rounded = math.ceil(raw / multiple) if fields["s_round_proj_up_dim_up"] else math.floor(raw / multiple)
    official = rounded * multiple
    return None if official == round_up(raw, 64) else official


def convert_state(state: dict[str, Tensor], config: ModelConfig,
                  path: Path) -> tuple[dict[str, Tensor], str]:
    """bioxlstm's state dict from the Lightning one, and the sLSTM layout found ("cuda"/"vanilla")."""
    state = strip_prefix(state, PREFIX, path)
    if config.rc_equivariant:
        _check_complement(state, path)
    layout = _slstm_layout(state)
    rules = model_rules(config, layout, rcps=config.rc_equivariant)
    return map_state(state, expected_shapes(config), rules, path, PREFIX), layout


def _check_complement(state: dict[str, Tensor], path: Path) -> None:
    """The RCPS complement maps must be bioxlstm's (A<->T, C<->G, others fixed); they are consumed."""
    for key in ("token_embedding.complement_map", "lm_head.complement_map"):
        found = state.pop(key, None)
        if found is None:
            raise ConversionError(f"{path}: missing key(s): {PREFIX}{key}")
        expected = DNA.complement_ids()
        if not found.is_meta and found.tolist() != expected:
            raise ConversionError(f"{path}: {PREFIX}{key} {found.tolist()} is not the DNA "
                                  f"complement map {expected}")


def _slstm_layout(state: dict[str, Tensor]) -> str:
    """"cuda" or "vanilla": which sLSTM backend wrote the recurrent kernels, from their shape."""
    kernels = [t for k, t in state.items() if k.endswith("slstm_cell._recurrent_kernel_")]
    if not kernels:
        return "cuda"
    NH, a, b = kernels[0].shape
    return "vanilla" if a == 4 * b and a != b else "cuda"
