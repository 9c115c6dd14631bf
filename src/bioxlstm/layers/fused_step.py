"""Fused single-token generation step on CPU: the whole model's step in one compiled call.

A generation step feeds one token per sequence through every block. In the generic forward that
is a few hundred small operator calls, whose Python and dispatcher overhead dominates at batch 1.
Here the step runs in C++: the dense projections (mLSTM up/down, sLSTM FFN, head) are
register-tiled loops that read each weight row once for all sequences, split over threads (a
step streams every weight, so it is bound by memory bandwidth), and the rest (norms, causal conv,
block-diagonal q/k/v and gates, RoPE, the mLSTM and sLSTM cell updates, output gating) are
hand-fused loops. It reads the model's parameters as they are (no copies), never modifies the
incoming state unless asked to, and returns the same state layout as the generic path, so the
two paths can be mixed freely.

The kernel is csrc/generation_step.cpp, built on first use by `cpu_build` and cached by torch;
`generation_step` dispatches between it and the generic forward, which runs where the kernel
cannot be built, or BIOXLSTM_NO_EXTENSIONS=1 is set.

The parameters a step reads are gathered once per model into a plan. Any parameter or submodule
assigned anywhere afterwards (`load_state_dict(assign=True)`, a replaced layer) invalidates the
plans; torch reports such assignments only through process-wide hooks, so those are installed
while some model holds a plan and removed once none does: importing bioxlstm changes nothing
global.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from bioxlstm.layers.cpu_kernels import GENERATION_STEP
from bioxlstm.layers.mlstm import EPS as MLSTM_EPS

_MLSTM_WEIGHTS = ("norm.weight", "layer.proj_up.weight", "layer.conv.weight", "layer.conv.bias",
                  "layer.q_proj.weight", "layer.k_proj.weight", "layer.v_proj.weight",
                  "layer.igate.weight", "layer.igate.bias", "layer.fgate.weight",
                  "layer.fgate.bias", "layer.out_norm.weight", "layer.skip",
                  "layer.proj_down.weight")
_SLSTM_WEIGHTS = ("norm.weight", "layer.conv.weight", "layer.conv.bias", "layer.igate.weight",
                  "layer.fgate.weight", "layer.zgate.weight", "layer.ogate.weight",
                  "layer.recurrent", "layer.bias", "layer.out_norm.weight", "ffn_norm.weight",
                  "ffn.proj_up.weight", "ffn.proj_down.weight")


class _Plan:
    """The parameters a fused step reads, gathered once per model (gathering costs ~0.2 ms)."""

    def __init__(self, model: nn.Module, registrations: int):
        self.registrations = registrations
        self.model_id = id(model)  # a copied model (deepcopy, pickle) carries a plan not its own
        self.weights: list[Tensor] = []
        self.kinds: list[int] = []
        self.eps = [model.norm.eps]
        for block in model.stack.blocks:
            names = _SLSTM_WEIGHTS if block.kind == "slstm" else _MLSTM_WEIGHTS
            self.weights += [block.get_parameter(name) for name in names]
            self.kinds.append(int(block.kind == "slstm"))
            third = block.ffn_norm.eps if block.kind == "slstm" else MLSTM_EPS
            self.eps += [block.norm.eps, block.layer.out_norm.eps, third]
        self.head_dim = model.config.mlstm_inner_dim // model.config.mlstm_heads
        self.ends = model.embedding.weight, model.norm.weight, model.head.weight


class _Assignments:
    """Counts parameter and submodule assignments anywhere while some watched model is alive.

    torch has these hooks only process-wide: they are installed when the first model is watched
    and removed when the last one is garbage-collected.
    """

    def __init__(self) -> None:
        self.count = 0
        self._models: weakref.WeakSet[nn.Module] = weakref.WeakSet()
        self._handles: list[RemovableHandle] = []

    def _assigned(self, *_: Any) -> None:
        self.count += 1

    def watch(self, model: nn.Module) -> None:
        """Count assignments (to any module) for as long as `model` lives."""
        if model in self._models:
            return
        if not self._handles:
            self._handles = [
                nn.modules.module.register_module_parameter_registration_hook(self._assigned),
                nn.modules.module.register_module_module_registration_hook(self._assigned)]
        self._models.add(model)
        weakref.finalize(model, self._release)

    def _release(self) -> None:
        if next(iter(self._models), None) is None:  # the last watched model is gone
            for handle in self._handles:
                handle.remove()
            self._handles = []


_assignments = _Assignments()
_NO_ROTATION = torch.empty(0)


def _plan(model: nn.Module) -> _Plan:
    plan = model.__dict__.get("_fused_step_plan")
    if plan is None or plan.model_id != id(model) or plan.registrations != _assignments.count:
        _assignments.watch(model)
        plan = _Plan(model, _assignments.count)
        model.__dict__["_fused_step_plan"] = plan
    return plan


def _rotation(model: nn.Module, B: int, position: int, position_ids: Tensor | None,
              plan: _Plan) -> Tensor:
    """cos | sin (1 or B, DH) of the rotary embedding at this step, exactly as `rotary` forms them."""
    DH = plan.head_dim
    inv_freq = model.config.rope_theta ** (-torch.arange(0, DH, 2, dtype=torch.float32) / DH)
    if position_ids is None:
        angles = torch.tensor([[float(position)]]) * inv_freq
    else:
        angles = position_ids.reshape(B, 1).to(torch.float32) * inv_freq
    dtype = model.embedding.weight.dtype
    return torch.cat([angles.cos().to(dtype), angles.sin().to(dtype)], dim=-1)


def fused_step(model: nn.Module, input_ids: Tensor, state: list[Any], position: int,
               position_ids: Tensor | None = None, inplace: bool = False
               ) -> tuple[Tensor, Tensor, list[Any]] | None:
    """Logits (B, vocab), final hidden (B, d) and new block states for one token, or None.

    None means the weights and state are not all CPU tensors of one floating dtype (weights
    also contiguous), so the caller runs the generic forward. With `inplace` the new state
    overwrites the given tensors (a generation loop that owns its state saves allocating and
    faulting in new memory); blocks is then `state` itself.
    """
    ext = GENERATION_STEP.load()
    plan = _plan(model)
    B = input_ids.shape[0]
    if len(state) != len(plan.kinds):
        raise ValueError(f"state has {len(state)} entries for a stack of {len(plan.kinds)} blocks")
    flat = []
    for conv_state, cell in state:
        flat.append(conv_state)
        flat.extend(cell)
    rot = _rotation(model, B, position, position_ids, plan) if model.config.rope else _NO_ROTATION
    out = ext.step(input_ids.reshape(B).long(), *plan.ends, plan.weights, flat, plan.kinds, rot,
                   plan.eps, model.config.vocab_size, inplace)
    if not out:
        return None
    if len(out) == 2:  # updated in place
        return out[0], out[1], state
    blocks, i = [], 2
    for kind in plan.kinds:
        if kind:
            blocks.append((out[i], tuple(out[i + 1:i + 5])))
            i += 5
        else:
            blocks.append((out[i], tuple(out[i + 1:i + 4])))
            i += 4
    return out[0], out[1], blocks
