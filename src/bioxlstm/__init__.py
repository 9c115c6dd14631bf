"""bioxlstm: xLSTM language models for DNA, proteins and small molecules, in pure PyTorch."""

__version__ = "0.1.0"

import bioxlstm.convert  # noqa: E402, F401  (lets from_pretrained read the authors' official files)
from bioxlstm.config import ModelConfig, preset  # noqa: E402
from bioxlstm.errors import BioXLSTMError, CheckpointError, ConfigError  # noqa: E402
from bioxlstm.model import XLSTMLanguageModel  # noqa: E402

__all__ = ["BioXLSTMError", "CheckpointError", "ConfigError", "ModelConfig",
           "XLSTMLanguageModel", "__version__", "preset"]
