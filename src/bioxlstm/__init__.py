"""bioxlstm: xLSTM language models for DNA, proteins and molecules (PyTorch; optional C++/Triton kernels)."""

__version__ = "0.1.0"

from bioxlstm.config import ModelConfig, preset  # noqa: E402
from bioxlstm.errors import BioXLSTMError, CheckpointError, ConfigError  # noqa: E402
from bioxlstm.model import XLSTMLanguageModel  # noqa: E402

__all__ = ["BioXLSTMError", "CheckpointError", "ConfigError", "ModelConfig",
           "XLSTMLanguageModel", "__version__", "preset"]
