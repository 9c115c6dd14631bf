"""Configuration as dataclasses: the model (with the paper's presets) and training runs."""

from bioxlstm.config.files import check_fields, read_config_file
from bioxlstm.config.model import MLSTM_FORMS, ModelConfig, preset, round_up
from bioxlstm.config.presets import DNA_VOCAB, NOMINAL_PARAMS, PRESETS, PROTEIN_VOCAB, SMILES_VOCAB
from bioxlstm.config.train import MAY_CHANGE_ON_RESUME, SCHEDULES, STRATEGIES, TrainConfig

__all__ = ["DNA_VOCAB", "MAY_CHANGE_ON_RESUME", "MLSTM_FORMS", "NOMINAL_PARAMS", "PRESETS",
           "PROTEIN_VOCAB", "SCHEDULES", "SMILES_VOCAB", "STRATEGIES", "ModelConfig", "TrainConfig",
           "check_fields", "preset", "read_config_file", "round_up"]
