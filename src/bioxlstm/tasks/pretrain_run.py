"""`bioxlstm pretrain`: one request (data, model, settings) checked, resolved and dispatched.

On resume, the run's own model and training settings are the starting point: a setting given
again is compared with the run's and refused if it differs (the Trainer names the fields), so
defaults of the command line never silently replace what the run was trained with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioxlstm.checkpoint import load_config
from bioxlstm.config import ModelConfig, TrainConfig, check_fields, preset, read_config_file
from bioxlstm.errors import ConfigError
from bioxlstm.io import check_output_dir
from bioxlstm.run_dir import newest_checkpoint
from bioxlstm.train import Trainer
from bioxlstm.train_state import STATE_JSON

DEFAULT_PRESET = "dna-xlstm-500k"
DATA_KINDS = ("genome", "fasta", "msa_dir", "smiles", "smiles_domains")
# options that only one kind of data reads, and what they need
ONLY_FOR = {"intervals": "genome", "valid_chroms": "genome", "test_chroms": "genome",
            "test_fraction": "msa_dir", "fim_rate": "msa_dir"}


@dataclass(frozen=True)
class PretrainRequest:
    """Everything `bioxlstm pretrain` was asked; None means "not given" (defaults apply)."""

    run_dir: str | Path
    data_kind: str
    data_path: str | Path
    resume: bool = False
    preset: str | None = None
    model_config: str | Path | None = None
    bidirectional: bool = False
    rc_equivariant: bool = False
    train_config: str | Path | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)
    seq_len: int | None = None
    objective: str = "clm"
    rc_aug: float | None = None
    intervals: str | Path | None = None
    valid_chroms: tuple[str, ...] = ()
    test_chroms: tuple[str, ...] = ()
    valid_fraction: float = 0.1
    test_fraction: float | None = None
    fim_rate: float | None = None

    def check(self) -> None:
        """Refuse options that the chosen data does not read, naming them."""
        if self.data_kind not in DATA_KINDS:
            raise ConfigError(f"unknown data kind {self.data_kind!r}; use one of {DATA_KINDS}")
        for name, kind in ONLY_FOR.items():
            if getattr(self, name) not in (None, ()) and self.data_kind != kind:
                raise ConfigError(f"--{name.replace('_', '-')} applies to --{kind.replace('_', '-')} "
                                  "data only")
        if self.data_kind != "genome" and self.objective != "clm":
            raise ConfigError("--objective mlm: masked-LM windows need --genome")
        if self.data_kind not in ("genome", "fasta") and self.rc_aug is not None:
            raise ConfigError("--rc-aug applies to DNA from --genome or --fasta only")
        if self.data_kind in ("smiles", "smiles_domains") and self.seq_len is not None:
            raise ConfigError("--seq-len does not apply to SMILES (rows are whole molecules up to "
                              "the model's context)")


def resolve_configs(request: PretrainRequest) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs of the run: the run's own when resuming one (with what was
    given on top), else the preset (default dna-xlstm-500k) or model file and the defaults."""
    found = newest_checkpoint(request.run_dir) if request.resume else None
    if request.model_config:
        model = ModelConfig.from_file(request.model_config)
    elif request.preset or found is None:
        model = preset(request.preset or DEFAULT_PRESET)
    else:
        model = load_config(found[0])
    switches = {k: True for k in ("bidirectional", "rc_equivariant") if getattr(request, k)}
    if switches:
        model = ModelConfig.from_dict({**model.to_dict(), **switches})
    train = TrainConfig() if found is None else _saved_train_config(found[0])
    given: dict[str, Any] = {}
    if request.train_config:  # only the fields the file names replace the run's
        given = read_config_file(request.train_config, "train")
        check_fields(TrainConfig, given, "train")
    given = {**given, **request.train_overrides}
    if found is None:
        given = {**_new_run_defaults(given, given.get("max_steps", train.max_steps)), **given}
    return model, TrainConfig.from_dict({**train.to_dict(), **given})


def _new_run_defaults(given: dict[str, Any], steps: int) -> dict[str, Any]:
    """What a new run from the command line does unless told otherwise: validate every tenth of
    the run and warm the learning rate up over the first tenth (the paper's DNA protocol)."""
    defaults: dict[str, Any] = {"eval_every": max(1, steps // 10)}
    if "warmup_steps" not in given and "warmup_fraction" not in given:
        defaults["warmup_fraction"] = 0.1
    return defaults


def _saved_train_config(checkpoint: Path) -> TrainConfig:
    """The training settings a checkpoint was written with."""
    try:
        return TrainConfig.from_dict(json.loads((checkpoint / STATE_JSON).read_text())["train_config"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{checkpoint}: cannot read the run's training settings ({err})") from None


def run_pretraining(request: PretrainRequest) -> Trainer:
    """Check the request, resolve its configs and pretrain on the chosen data."""
    request.check()
    check_output_dir(request.run_dir, "run directory")  # before any data is read
    model_config, train_config = resolve_configs(request)
    seq_len = request.seq_len or model_config.context_length
    kind, path, run_dir, resume = request.data_kind, request.data_path, request.run_dir, request.resume
    if kind == "genome":
        from bioxlstm.data.genome_windows import WindowConfig
        from bioxlstm.tasks.pretrain import GenomeData, pretrain_genome

        data = GenomeData(path, request.intervals, request.valid_chroms, request.test_chroms)
        windows = WindowConfig(seq_len, train_config.batch_size, request.objective, request.rc_aug or 0.0)
        return pretrain_genome(data, model_config, train_config, run_dir, windows, resume)
    if kind == "msa_dir":
        from bioxlstm.data.fim import FIMConfig
        from bioxlstm.tasks.pretrain_msa import pretrain_msa

        fim = FIMConfig(1.0 if request.fim_rate is None else request.fim_rate)
        test_fraction = 0.1 if request.test_fraction is None else request.test_fraction
        return pretrain_msa(path, model_config, train_config, run_dir, seq_len,
                            request.valid_fraction, test_fraction, fim, resume=resume)
    if kind in ("smiles", "smiles_domains"):
        from bioxlstm.tasks.pretrain_smiles import SmilesData, pretrain_smiles

        data = SmilesData(path, kind == "smiles_domains", request.valid_fraction, train_config.seed)
        return pretrain_smiles(data, model_config, train_config, run_dir, resume=resume)
    from bioxlstm.tasks.pretrain import pretrain_fasta

    return pretrain_fasta(path, model_config, train_config, run_dir, seq_len,
                          request.valid_fraction, resume=resume, rc_aug=request.rc_aug or 0.0)
