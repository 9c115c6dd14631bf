"""bioxlstm: xLSTM language models for DNA, proteins and molecules (PyTorch; optional C++/Triton kernels)."""

import bioxlstm.convert  # noqa: F401  (registers the reader of the authors' official checkpoints)
from bioxlstm.config import ModelConfig, preset
from bioxlstm.errors import BioXLSTMError, CheckpointError, ConfigError
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.version import __version__

__all__ = ["BioXLSTMError", "CheckpointError", "ConfigError", "ModelConfig",
           "XLSTMLanguageModel", "__version__", "preset"]
