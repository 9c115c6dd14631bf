"""The model's configuration: shape and options of an xLSTM language model, with field-named errors."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioxlstm.alphabets import ALPHABETS, DNA
from bioxlstm.config.files import check_fields, read_config_file
from bioxlstm.config.presets import PRESETS
from bioxlstm.errors import ConfigError

MLSTM_FORMS = ("chunkwise", "parallel", "recurrent")
# options that reproduce the official Bio-xLSTM code in converted models (docs/pretrained.md)
CHOICES = {"rope_pairing": ("half", "interleaved"), "rope_scope": ("head", "inner"),
           "rope_freq_form": ("power", "reciprocal"),
           "bidirectional_form": ("shared_mixer", "official")}


@dataclass
class ModelConfig:
    """Shape and options of an xLSTM language model (docs/model.md).

    Blocks are mLSTM unless their index is listed in `slstm_at`. `rc_equivariant` makes a DNA
    model reverse-complement equivariant by parameter sharing (docs/model.md, section 6).
    """

    vocab_size: int
    d_model: int = 128
    num_blocks: int = 2
    slstm_at: list[int] = field(default_factory=list)
    mlstm_heads: int = 4
    slstm_heads: int = 4
    proj_factor: float = 2.0
    ffn_proj_factor: float = 1.3
    round_to: int = 64
    conv_kernel: int = 4
    qkv_blocksize: int = 4
    dropout: float = 0.0
    bidirectional: bool = False
    rope: bool = False
    rope_theta: float = 500_000.0
    context_length: int = 1024
    chunk_size: int = 64
    mlstm_form: str = "chunkwise"
    pad_vocab_multiple: int = 8
    alphabet: str | None = "dna"  # a vocabulary name (docs/model.md); None: a model of raw ids
    rc_equivariant: bool = False
    rope_pairing: str = "half"
    rope_scope: str = "head"
    rope_freq_form: str = "power"
    rope_before_gates: bool = False
    rope_max_position: int | None = None
    mlstm_bias: bool = False
    mlstm_dim: int | None = None
    ffn_dim: int | None = None
    bidirectional_form: str = "shared_mixer"
    rcps_slstm_head_flip: bool = False
    embedding_dropout: bool = True
    ffn_dropout: bool = True
    masked_token_ids: list[int] = field(default_factory=list)
    source: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.slstm_at = sorted(int(j) for j in self.slstm_at)
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        positive = ("vocab_size", "d_model", "num_blocks", "mlstm_heads", "slstm_heads",
                    "round_to", "conv_kernel", "qkv_blocksize", "context_length", "chunk_size",
                    "pad_vocab_multiple")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"config field '{name}' must be a positive integer, got {value!r}")
        self._validate_official_options()
        for name in ("proj_factor", "ffn_proj_factor", "rope_theta"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) <= 0:
                raise ConfigError(f"config field '{name}' must be a positive number, "
                                  f"got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"config field 'dropout' must be in [0, 1), got {self.dropout!r}")
        bad = [j for j in self.slstm_at if not 0 <= j < self.num_blocks]
        if bad:
            raise ConfigError(f"config field 'slstm_at' has block indices {bad} outside "
                              f"0..{self.num_blocks - 1}")
        if self.mlstm_form not in MLSTM_FORMS:
            raise ConfigError(f"config field 'mlstm_form' must be one of {MLSTM_FORMS}, "
                              f"got {self.mlstm_form!r}")
        if self.has_mlstm:
            inner = self.mlstm_inner_dim
            if inner % self.mlstm_heads or inner % self.qkv_blocksize:
                raise ConfigError(f"config field 'mlstm_heads' ({self.mlstm_heads}) and "
                                  f"'qkv_blocksize' ({self.qkv_blocksize}) must divide the mLSTM "
                                  f"inner width {inner}")
            if self.rope and (inner // self.mlstm_heads) % 2:
                raise ConfigError("config field 'rope' needs an even mLSTM head size")
        if self.slstm_at and self.d_model % self.slstm_heads:
            raise ConfigError(f"config field 'slstm_heads' ({self.slstm_heads}) must divide "
                              f"d_model ({self.d_model})")
        if self.alphabet is not None and not isinstance(self.alphabet, str):
            raise ConfigError(f"config field 'alphabet' must be a name, got {self.alphabet!r}")
        for name in ("bidirectional", "rope", "rc_equivariant"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"config field '{name}' must be true or false")
        if self.rc_equivariant:
            self._check_complement()

    def _check_complement(self) -> None:
        """An RC-equivariant model needs a fixed alphabet with a complement map (DNA)."""
        alphabet = ALPHABETS.get((self.alphabet or "").lower())
        if alphabet is None or alphabet.complement_ids() is None or self.vocab_size != len(alphabet):
            raise ConfigError(f"config field 'rc_equivariant' needs an alphabet with a complement map "
                              f"(alphabet 'dna', vocab_size {len(DNA)}), got alphabet "
                              f"{self.alphabet!r} and vocab_size {self.vocab_size}")

    def _validate_official_options(self) -> None:
        """Check the fields that reproduce the official code (all off by default)."""
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"config field '{name}' must be one of {allowed}, "
                                  f"got {getattr(self, name)!r}")
        for name in ("rope_before_gates", "mlstm_bias", "rcps_slstm_head_flip", "embedding_dropout",
                     "ffn_dropout"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"config field '{name}' must be true or false")
        for name in ("mlstm_dim", "ffn_dim", "rope_max_position"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"config field '{name}' must be a positive integer or null, "
                                  f"got {value!r}")
        ids = self.masked_token_ids
        if not isinstance(ids, list) or not all(isinstance(j, int) and 0 <= j < self.vocab_size
                                                 for j in ids):
            raise ConfigError(f"config field 'masked_token_ids' must list token ids in "
                              f"[0, {self.vocab_size}), got {ids!r}")
        if self.rcps_slstm_head_flip and not self.rc_equivariant:
            raise ConfigError("config field 'rcps_slstm_head_flip' needs 'rc_equivariant'")
        if self.source is not None and not isinstance(self.source, dict):
            raise ConfigError(f"config field 'source' must be a mapping or null, got {self.source!r}")

    @property
    def fused_step_compatible(self) -> bool:
        """Whether the fused CPU generation step computes this model: it knows no mLSTM biases and
        only bioxlstm's own RoPE (half pairs, per-head frequencies, gates from unrotated q, k)."""
        rope_plain = ((self.rope_pairing, self.rope_scope, self.rope_freq_form) == ("half", "head", "power")
                      and not self.rope_before_gates and self.rope_max_position is None)
        return not self.mlstm_bias and (not self.rope or rope_plain)

    @property
    def has_mlstm(self) -> bool:
        return len(self.slstm_at) < self.num_blocks

    @property
    def mlstm_inner_dim(self) -> int:
        if self.mlstm_dim is not None:
            return self.mlstm_dim
        return round_up(self.proj_factor * self.d_model, self.round_to)

    @property
    def ffn_inner_dim(self) -> int:
        if self.ffn_dim is not None:
            return self.ffn_dim
        return round_up(self.ffn_proj_factor * self.d_model, self.round_to)

    @property
    def padded_vocab_size(self) -> int:
        return round_up(self.vocab_size, self.pad_vocab_multiple)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a mapping, rejecting unknown or missing fields by name."""
        check_fields(cls, data, "model")
        if "vocab_size" not in data:
            raise ConfigError("config field 'vocab_size' is required")
        try:
            return cls(**data)
        except TypeError as err:
            raise ConfigError(f"bad config: {err}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        """Load from a YAML or JSON file; a `preset:` key starts from that preset."""
        data = read_config_file(path, "model")
        if isinstance(data, dict) and "preset" in data:
            overrides = {k: v for k, v in data.items() if k != "preset"}
            return preset(data["preset"], **overrides)
        return cls.from_dict(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def round_up(x: float, multiple: int) -> int:
    """Smallest multiple of `multiple` that is >= x (how the xLSTM rounds inner widths)."""
    return int(-(-x // multiple) * multiple)


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset's config, with any fields overridden."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return ModelConfig.from_dict({**PRESETS[name], **overrides})
