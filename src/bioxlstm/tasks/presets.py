"""`bioxlstm presets`: every named configuration with its shape and exact parameter count."""

from __future__ import annotations

import torch

from bioxlstm.config import NOMINAL_PARAMS, PRESETS, preset
from bioxlstm.model import XLSTMLanguageModel


def presets_table() -> str:
    """A text table: name, alphabet, width, blocks, sLSTM positions, context, parameters, and the
    count's difference from the size in the preset's name."""
    lines = [f"{'preset':<20}{'alphabet':<10}{'d':>6}{'blocks':>8}{'sLSTM at':>14}{'context':>10}"
             f"{'parameters':>14}{'vs name':>9}"]
    for name in PRESETS:
        config = preset(name)
        with torch.device("meta"):
            n = XLSTMLanguageModel(config).num_parameters()
        nominal = NOMINAL_PARAMS.get(name)
        ratio = f"{(n / nominal - 1) * 100:+.1f}%" if nominal else "-"
        slstm = ",".join(map(str, config.slstm_at)) or "-"
        lines.append(f"{name:<20}{config.alphabet or '-':<10}{config.d_model:>6}{config.num_blocks:>8}"
                     f"{slstm:>14}{config.context_length:>10}{n:>14,}{ratio:>9}")
    return "\n".join(lines)
