"""One token per sequence from a recurrent state: the model's modules, the fused CPU step, and the
dispatcher between them that `XLSTMLanguageModel.forward` and `.step` call.

Both implementations take (model, input_ids (B, 1), state (an LMState), position_ids, inplace)
and return the logits (B, vocab), the final hidden state (B, d) and the new block states.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bioxlstm.layers.cpu_kernels import GENERATION_STEP
from bioxlstm.layers.fast_paths import FastPath
from bioxlstm.layers.fused_step import fused_step

StepResult = tuple[Tensor, Tensor, list[Any]]


def generation_step_reference(model: nn.Module, input_ids: Tensor, state: Any,
                              position_ids: Tensor | None = None,
                              inplace: bool = False) -> StepResult:
    """The step through the model's modules (`forward_modules`), as any other input; the given
    state is left as it is."""
    out = model.forward_modules(input_ids, state, True, position_ids)
    return out.logits[:, -1], out.hidden[:, -1], out.state.blocks


def generation_step_fused(model: nn.Module, input_ids: Tensor, state: Any,
                          position_ids: Tensor | None = None, inplace: bool = False) -> StepResult:
    """The step in one call of the fused kernel (`fused_step`), which with `inplace` writes the new
    state over the old; the reference where the kernel declines the model's or state's tensors."""
    out = fused_step(model, input_ids, state.blocks, state.position, position_ids, inplace)
    if out is None:
        return generation_step_reference(model, input_ids, state, position_ids)
    return out


def generation_step_supported(model: nn.Module, input_ids: Tensor, state: Any,
                              position_ids: Tensor | None = None, inplace: bool = False) -> bool:
    """Whether `generation_step_fused` takes this call: a causal model's one-token CPU step without
    grad (nor training dropout), its embedding float32 or float64."""
    config = model.config
    return (input_ids.shape[1] == 1 and not torch.is_grad_enabled()
            and input_ids.device.type == "cpu" and not config.bidirectional
            and not config.rc_equivariant and not (model.training and config.dropout > 0)
            and config.fused_step_compatible
            and model.embedding.weight.dtype in (torch.float32, torch.float64))


generation_step = FastPath("generation step", generation_step_reference)
generation_step.register("fused", generation_step_fused, generation_step_supported, GENERATION_STEP)
