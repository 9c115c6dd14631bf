"""Model configuration as a dataclass, YAML/JSON round trips, and the paper's named presets."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bioxlstm.errors import ConfigError

MLSTM_FORMS = ("chunkwise", "parallel", "recurrent")


@dataclass
class ModelConfig:
    """Shape and options of an xLSTM language model (SPEC section 1).

    Blocks are mLSTM unless their index is listed in `slstm_at`. `rc_equivariant` makes a DNA
    model reverse-complement equivariant by parameter sharing (SPEC section 2, PS).
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
    alphabet: str | None = None
    rc_equivariant: bool = False

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
        if self.rc_equivariant and ((self.alphabet or "dna").lower() != "dna"
                                    or self.vocab_size != DNA_VOCAB):
            raise ConfigError(f"config field 'rc_equivariant' needs the DNA alphabet (alphabet 'dna' "
                              f"and vocab_size {DNA_VOCAB}), got alphabet {self.alphabet!r} and "
                              f"vocab_size {self.vocab_size}")

    @property
    def has_mlstm(self) -> bool:
        return len(self.slstm_at) < self.num_blocks

    @property
    def mlstm_inner_dim(self) -> int:
        return round_up(self.proj_factor * self.d_model, self.round_to)

    @property
    def ffn_inner_dim(self) -> int:
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


def check_fields(cls: type, data: Any, what: str) -> None:
    """Raise ConfigError unless `data` is a mapping whose keys are all fields of dataclass `cls`."""
    if not isinstance(data, dict):
        raise ConfigError(f"a {what} config must be a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(data) - known))
    if unknown:
        raise ConfigError(f"unknown {what} config field(s) {unknown}; known fields: {sorted(known)}")


def read_config_file(path: str | Path, section: str) -> Any:
    """A YAML/JSON file's content, or its `section:` mapping when it has one (run files hold both)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as err:
        reason = " ".join(str(err).split())
        raise ConfigError(f"config file {path} is not valid YAML: {reason}") from None
    if isinstance(data, dict) and section in data:
        data = data[section]
    return data


def round_up(x: float, multiple: int) -> int:
    """Smallest multiple of `multiple` that is >= x (how the xLSTM rounds inner widths)."""
    return int(-(-x // multiple) * multiple)


DNA_VOCAB = 12
PROTEIN_VOCAB = 38
SMILES_VOCAB = 48

PRESETS: dict[str, dict[str, Any]] = {
    "dna-xlstm-500k": dict(alphabet="dna", vocab_size=DNA_VOCAB, d_model=128, num_blocks=5,
                           slstm_at=[0, 1, 2, 3, 4], ffn_proj_factor=1.1, context_length=1024),
    "dna-xlstm-2m": dict(alphabet="dna", vocab_size=DNA_VOCAB, d_model=256, num_blocks=6,
                         slstm_at=[0, 1, 2, 3, 4, 5], ffn_proj_factor=1.1, context_length=1024),
    "dna-xlstm-4m": dict(alphabet="dna", vocab_size=DNA_VOCAB, d_model=256, num_blocks=9,
                         mlstm_heads=4, context_length=32_768),
    "prot-xlstm-26m": dict(alphabet="protein", vocab_size=PROTEIN_VOCAB, d_model=512,
                           num_blocks=16, mlstm_heads=4, rope=True, context_length=131_072),
    "prot-xlstm-102m": dict(alphabet="protein", vocab_size=PROTEIN_VOCAB, d_model=1024,
                            num_blocks=16, mlstm_heads=4, rope=True, context_length=131_072),
    "chem-xlstm-15m": dict(alphabet="smiles", vocab_size=SMILES_VOCAB, d_model=512, num_blocks=9,
                           mlstm_heads=8, dropout=0.25, context_length=100),
    "chem-xlstm-15m-icl": dict(alphabet="smiles", vocab_size=SMILES_VOCAB, d_model=512,
                               num_blocks=9, mlstm_heads=8, dropout=0.25, context_length=4096),
    "tiny-mlstm": dict(alphabet="dna", vocab_size=DNA_VOCAB, d_model=32, num_blocks=2,
                       mlstm_heads=2, context_length=256, chunk_size=16),
    "tiny-slstm": dict(alphabet="dna", vocab_size=DNA_VOCAB, d_model=32, num_blocks=2,
                       slstm_at=[0, 1], slstm_heads=2, context_length=256),
    "tiny-mixed": dict(alphabet="dna", vocab_size=DNA_VOCAB, d_model=32, num_blocks=3,
                       slstm_at=[1], mlstm_heads=2, slstm_heads=2, context_length=256,
                       chunk_size=16),
    "tiny-prot-xlstm": dict(alphabet="protein", vocab_size=PROTEIN_VOCAB, d_model=64, num_blocks=3,
                            mlstm_heads=2, rope=True, context_length=2048, chunk_size=64),
    "tiny-chem-xlstm": dict(alphabet="smiles", vocab_size=SMILES_VOCAB, d_model=64, num_blocks=3,
                            mlstm_heads=2, context_length=100, chunk_size=32),
}

NOMINAL_PARAMS: dict[str, int] = {
    "dna-xlstm-500k": 500_000,
    "dna-xlstm-2m": 2_000_000,
    "dna-xlstm-4m": 4_000_000,
    "prot-xlstm-26m": 26_000_000,
    "prot-xlstm-102m": 102_000_000,
    "chem-xlstm-15m": 15_000_000,
    "chem-xlstm-15m-icl": 15_000_000,
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset's config, with any fields overridden."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return ModelConfig.from_dict({**PRESETS[name], **overrides})
