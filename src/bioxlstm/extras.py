"""Optional dependencies: imported on first use, with a one-line hint of the extra to install.

The core install needs only torch, numpy, safetensors, pyyaml, tqdm and huggingface_hub; genome
access, protein families, chemistry, plots and downstream baselines and LoRA come with
`bioxlstm[dna]`, `[protein]`, `[chem]`, `[plot]`, `[downstream]` (or everything with `[all]`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from bioxlstm.errors import BioXLSTMError


class MissingExtraError(BioXLSTMError, ImportError):
    """An optional dependency of the feature in use is not installed."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import `module`, or raise MissingExtraError saying `what` needs `pip install 'bioxlstm[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise MissingExtraError(f"{what} needs the {package} package: pip install 'bioxlstm[{extra}]'"
                                ) from None
