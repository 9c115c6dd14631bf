"""The xLSTM language model shared by all alphabets: embedding -> block stack -> norm -> head."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import ModelHubMixin
from torch import Tensor, nn

from bioxlstm.alphabets import IGNORE_INDEX
from bioxlstm.checkpoint import hub_snapshot, load_config, load_pretrained, save_pretrained
from bioxlstm.config import ModelConfig
from bioxlstm.generation import sample_continuation
from bioxlstm.layers.generation_step import generation_step
from bioxlstm.layers.primitives import LayerNorm, small_init_
from bioxlstm.layers.rcps import fold_hidden, fold_logits, rc_pair
from bioxlstm.layers.stack import BlockStack, StackState
from bioxlstm.layers.variants import mask_logits
from bioxlstm.vocabulary import vocabulary_for

# Readers of checkpoints in other formats, tried first by from_pretrained: each returns a model or
# None when the path is not its format (bioxlstm.convert registers the authors' official formats)
CheckpointReader = Callable[[str, "str | torch.device"], "XLSTMLanguageModel | None"]
CHECKPOINT_READERS: list[CheckpointReader] = []

PS_SEES_AHEAD = ("in an RC-equivariant (rc_equivariant=True) model the reverse-complement strand "
                 "at position t has read every token after t")


@dataclass
class LMState:
    """Recurrent state of the whole model after `position` tokens (causal models only)."""

    blocks: StackState
    position: int


@dataclass
class LMOutput:
    logits: Tensor  # (B, S, vocab_size)
    hidden: Tensor  # (B, S, d_model), after the final norm (RC-equivariant models: both strands' mean)
    state: LMState | None = None


@dataclass
class Embeddings:
    per_token: Tensor  # (B, S, d_model)
    pooled: Tensor  # (B, d_model), mean over each sequence's own positions


class XLSTMLanguageModel(
    nn.Module,
    ModelHubMixin,
    library_name="bioxlstm",
    tags=["xlstm", "biology", "bioxlstm"],
    paper_url="https://arxiv.org/abs/2411.04165",
    license="apache-2.0",
):
    """One model class for DNA, proteins and SMILES; what differs per alphabet is the config.

    With config.rc_equivariant the model is RC-equivariant by parameter sharing (docs/model.md, section 6):
    the stack runs with the same weights on x and on RC(x), and the head adds the RC strand's
    logits, complement-permuted and read in the forward frame. Such a model sees both strands of
    the whole sequence, so it trains with MLM and keeps no state.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        V, d = config.padded_vocab_size, config.d_model
        self.embedding = nn.Embedding(V, d)
        self.dropout = nn.Dropout(config.dropout if config.embedding_dropout else 0.0)
        self.stack = BlockStack(config)
        self.norm = LayerNorm(d)
        self.head = nn.Linear(d, V, bias=False)
        with torch.no_grad():
            small_init_(self.embedding.weight, d)
            small_init_(self.head.weight, d)

    def gradient_checkpointing(self, enable: bool = True) -> XLSTMLanguageModel:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.stack.checkpointing = enable
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check_ids(self, input_ids: Tensor) -> None:
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"input_ids must be an integer tensor of shape (batch, length), got "
                             f"{input_ids.dtype} of shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids must hold at least one token per sequence")
        if input_ids.numel():
            lo, hi = (v.item() for v in torch.aminmax(input_ids))  # one pass, cheap per token
            if lo < 0 or hi >= self.config.vocab_size:
                raise ValueError(f"input_ids must lie in [0, {self.config.vocab_size}); got "
                                 f"values from {lo} to {hi}")

    def forward(
        self,
        input_ids: Tensor,
        state: LMState | None = None,
        return_state: bool = False,
        position_ids: Tensor | None = None,
        lengths: Tensor | None = None,
    ) -> LMOutput:
        """Logits for every position; pass `state` to continue where an earlier call stopped.

        `lengths` (B,) marks right padding, so bidirectional and RC-equivariant models reverse
        each sequence within its own length; causal models never look ahead, so padding cannot
        reach them. One token per sequence from a state is a generation step
        (layers/generation_step.py): on CPU without grad a single fused kernel call, with the
        same result.
        """
        self._check_ids(input_ids)
        if state is not None and input_ids.shape[1] == 1:
            logits, h, blocks = generation_step(self, input_ids, state, position_ids)
            logits = mask_logits(logits, self.config.masked_token_ids)
            return LMOutput(logits.unsqueeze(1), h.unsqueeze(1),
                            LMState(blocks, state.position + 1) if return_state else None)
        return self.forward_modules(input_ids, state, return_state, position_ids, lengths)

    def forward_modules(
        self,
        input_ids: Tensor,
        state: LMState | None = None,
        return_state: bool = False,
        position_ids: Tensor | None = None,
        lengths: Tensor | None = None,
    ) -> LMOutput:
        """`forward` through the model's modules for any input, on input_ids it has checked; the
        reference implementation of the generation step."""
        B, S = input_ids.shape
        offset = 0 if state is None else state.position
        if position_ids is None and self.config.rope:
            position_ids = torch.arange(offset, offset + S, device=input_ids.device).expand(B, S)
        if self.config.rc_equivariant:
            return self._forward_both_strands(input_ids, state, return_state, position_ids, lengths)
        x = self.dropout(self.embedding(input_ids))
        h, blocks = self.stack(x, None if state is None else state.blocks, position_ids, lengths)
        h = self.norm(h)
        return LMOutput(self._logits(h), h, LMState(blocks, offset + S) if return_state else None)

    def _forward_both_strands(
        self,
        input_ids: Tensor,
        state: LMState | None,
        return_state: bool,
        position_ids: Tensor | None,
        lengths: Tensor | None,
    ) -> LMOutput:
        """The RCPS forward: one shared-weight pass over the rows [x; RC(x)], folded at the head."""
        if state is not None or return_state:
            raise ValueError(f"an RC-equivariant model takes and returns no state: {PS_SEES_AHEAD}")
        B, S = input_ids.shape
        if lengths is not None:
            lengths = _lengths(lengths, B, S, input_ids.device)
        if position_ids is not None:
            position_ids = torch.cat([position_ids.expand(B, S)] * 2)
        table = torch.tensor(vocabulary_for(self.config).complement_ids(), device=input_ids.device)
        both = rc_pair(input_ids, table, lengths)
        x = self.dropout(self.embedding(both))
        h, _ = self.stack(x, None, position_ids, None if lengths is None else lengths.repeat(2))
        h = self.norm(h)
        return LMOutput(fold_logits(self._logits(h), table, lengths), fold_hidden(h, lengths))

    def _logits(self, h: Tensor) -> Tensor:
        """The head's logits over the real vocabulary (the padding columns dropped).

        The result is a copy, not a view of the padded logits: FSDP warns about (and an in-place op
        on a view would break) the backward hook it puts on a root module's output.
        """
        logits = mask_logits(self.head(h), self.config.masked_token_ids)
        V = self.config.vocab_size
        return logits if logits.shape[-1] == V else logits[..., :V].clone()

    def loss(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        objective: str = "clm",
        position_ids: Tensor | None = None,
        reduction: str = "mean",
    ) -> Tensor:
        """Token cross-entropy, mean (or with reduction='sum', summed) over the targets.

        clm: position t predicts labels[t + 1] (labels default to input_ids).
        mlm: position t predicts labels[t] (labels required; unmasked positions set to -100).
        Labels equal to -100 are ignored. RC-equivariant models take only mlm: their RC strand at
        t has read the tokens after t.
        """
        if objective == "clm" and self.config.rc_equivariant:
            raise ValueError(f"the causal LM loss leaks the future here: {PS_SEES_AHEAD}; "
                             f"train RC-equivariant models with objective='mlm'")
        targets = loss_targets(input_ids, labels, objective)
        logits = self(input_ids, position_ids=position_ids).logits
        if objective == "clm":
            logits = logits[:, :-1]
        return token_cross_entropy(logits, targets, reduction)

    def _pieces(
        self, input_ids: Tensor, chunk_tokens: int | None, lengths: Tensor | None
    ) -> Iterator[tuple[int, LMOutput]]:
        """Run the model over input_ids, in pieces of chunk_tokens carrying the state if given."""
        if chunk_tokens is None or input_ids.shape[1] <= chunk_tokens:
            yield 0, self(input_ids, lengths=lengths)
            return
        if self.config.bidirectional or self.config.rc_equivariant:
            kind = "an RC-equivariant" if self.config.rc_equivariant else "a bidirectional"
            raise ValueError(f"{kind} model cannot run in pieces: give chunk_tokens=None")
        state = None
        for start in range(0, input_ids.shape[1], chunk_tokens):
            out = self(input_ids[:, start:start + chunk_tokens], state=state, return_state=True)
            state = out.state
            yield start, out

    @torch.no_grad()
    def log_likelihood(
        self, input_ids: Tensor, lengths: Tensor | None = None, chunk_tokens: int | None = None
    ) -> Tensor:
        """Sum over t >= 1 of log p(x_t | x_<t) per sequence (B,), ignoring right padding.

        With chunk_tokens the input is fed in pieces through the recurrent state, so memory
        does not grow with sequence length. Not defined for RC-equivariant models, which see ahead.
        """
        if self.config.rc_equivariant:
            raise ValueError(f"log_likelihood needs a causal model, but {PS_SEES_AHEAD}")
        B, S = input_ids.shape
        lengths = _lengths(lengths, B, S, input_ids.device)
        total = torch.zeros(B, dtype=torch.float64, device=input_ids.device)
        for start, out in self._pieces(input_ids, chunk_tokens, None):
            targets = input_ids[:, start + 1: start + 1 + out.logits.shape[1]]
            logits = _upcast(out.logits[:, : targets.shape[1]])
            logp = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            positions = torch.arange(start + 1, start + 1 + targets.shape[1], device=input_ids.device)
            valid = positions.unsqueeze(0) < lengths.unsqueeze(1)
            total += (logp.double() * valid).sum(1)  # float64: differences of long sums stay exact
        return total

    @torch.no_grad()
    def embed(
        self, input_ids: Tensor, lengths: Tensor | None = None, chunk_tokens: int | None = None
    ) -> Embeddings:
        """Per-token hidden states and their mean over each sequence's valid positions.

        For an RC-equivariant model per_token[t] is the mean of the forward strand's state at t and
        the RC strand's state at the mirror position: d_model channels, so downstream heads need no
        change, embed(RC(x)).per_token is embed(x).per_token reversed, and pooled is RC-invariant.
        """
        B, S = input_ids.shape
        lengths = _lengths(lengths, B, S, input_ids.device)
        per_token = torch.cat([out.hidden for _, out in self._pieces(input_ids, chunk_tokens,
                                                                     lengths)], dim=1)
        mask = (torch.arange(S, device=input_ids.device).unsqueeze(0) < lengths.unsqueeze(1))
        mask = mask.unsqueeze(-1).to(per_token.dtype)
        pooled = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)
        return Embeddings(per_token, pooled)

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        stop_token: int | None = None,
        suppress_tokens: list[int] | None = None,
    ) -> Tensor:
        """Continue each prompt (B, P) by up to max_new_tokens, one token at a time from the state.

        Memory per new token is constant: only the recurrent state is kept, never the past.
        After `stop_token` a row keeps emitting `stop_token`; `suppress_tokens` are never drawn.
        """
        if self.config.bidirectional:
            raise ValueError("a bidirectional model cannot generate: it needs the whole sequence")
        if self.config.rc_equivariant:
            raise ValueError(f"an RC-equivariant model cannot generate: {PS_SEES_AHEAD}")
        if prompt_ids.dim() != 2 or prompt_ids.shape[1] == 0:
            raise ValueError("generate needs a non-empty prompt of shape (batch, length)")
        out = self(prompt_ids, return_state=True)
        allowed = None
        if suppress_tokens:
            allowed = torch.ones(self.config.vocab_size, dtype=torch.bool)
            allowed[suppress_tokens] = False
        new, _ = sample_continuation(self, out.state, out.logits[:, -1], max_new_tokens, temperature,
                                     top_k, top_p, generator, stop_token, allowed)
        return torch.cat([prompt_ids, new], dim=1)

    @torch.no_grad()
    def step(self, next_ids: Tensor, state: LMState, position_ids: Tensor | None = None) -> Tensor:
        """Logits (B, vocab) for one new token per sequence (B,), advancing `state` in place.

        The generation loop's step, like a Transformer's KV-cache step: the state it is given
        becomes the state after next_ids, so on CPU the fused kernel overwrites the recurrent
        state instead of allocating a new one per token. Keep a copy to branch from a state.
        `position_ids` (B,) gives the token's RoPE position (default: the state's position).
        """
        if not isinstance(state, LMState):
            raise ValueError("step needs the state of an earlier call: "
                             "model(prompt_ids, return_state=True).state")
        ids = next_ids.reshape(-1, 1)
        self._check_ids(ids)
        positions = None if position_ids is None else position_ids.reshape(-1, 1)
        logits, _, blocks = generation_step(self, ids, state, positions, True)  # in place
        state.blocks, state.position = blocks, state.position + 1
        return mask_logits(logits, self.config.masked_token_ids)

    def _save_pretrained(self, save_directory: Path) -> None:
        """ModelHubMixin.save_pretrained's writer: config.json and model.safetensors, atomically.

        The mixin adds a model card (README.md); `push_to_hub=True` uploads the directory.
        """
        save_pretrained(self, save_directory)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        map_location: str | torch.device = "cpu",
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
    ) -> XLSTMLanguageModel:
        """Load a local checkpoint directory offline, or a Hub repository id through huggingface_hub.

        Nothing is unpickled. A Hub id is fetched into (or, with local_files_only or HF_HUB_OFFLINE=1,
        read from) the Hugging Face cache; a broken or missing checkpoint raises CheckpointError.
        A path in another format that a reader of CHECKPOINT_READERS knows is loaded by it (an
        official DNA-xLSTM, Prot-xLSTM or Chem-xLSTM checkpoint: converted in memory).
        """
        source = str(pretrained_model_name_or_path)
        for reader in CHECKPOINT_READERS:
            model = reader(source, map_location)
            if model is not None:
                return model
        if not os.path.isdir(source) and not _is_path(source):
            source = str(hub_snapshot(source, revision, cache_dir, force_download, local_files_only, token))
        load_config(source)  # refuse a broken config.json, naming it, before the mixin parses it
        return super().from_pretrained(source, map_location=map_location)

    @classmethod
    def _from_pretrained(
        cls, *, model_id: str, map_location: str | torch.device = "cpu", **_: object
    ) -> XLSTMLanguageModel:
        """ModelHubMixin's loader, given a local directory: strict safetensors load, no pickle."""
        return load_pretrained(cls, model_id, map_location)


def loss_targets(input_ids: Tensor, labels: Tensor | None, objective: str) -> Tensor:
    """What each position is scored against: the next token (clm) or its own label (mlm)."""
    if objective == "clm":
        return (input_ids if labels is None else labels)[:, 1:]
    if objective == "mlm":
        if labels is None:
            raise ValueError("the masked-LM loss needs labels (-100 where nothing is masked)")
        return labels
    raise ValueError(f"unknown objective {objective!r}; use 'clm' or 'mlm'")


def token_cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of logits (B, S, V) against targets (B, S), skipping -100; mean or sum."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return F.cross_entropy(_upcast(logits).reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction=reduction)


def _is_path(source: str) -> bool:
    """Whether a checkpoint argument names a local path rather than a Hub id ("owner/name"):
    absolute or relative ('.', '~'), more than one '/', or its first folder exists here (so a
    mistyped `runs/x` fails at once instead of being looked up on the Hub)."""
    if os.path.isabs(source) or source.startswith((".", "~")) or source.count("/") > 1:
        return True
    return "/" in source and os.path.isdir(source.split("/")[0])


def _lengths(lengths: Tensor | None, B: int, S: int, device: torch.device) -> Tensor:
    if lengths is None:
        return torch.full((B,), S, device=device)
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.shape != (B,) or bool((lengths < 1).any()) or bool((lengths > S).any()):
        raise ValueError(f"lengths must be {B} integers in [1, {S}]")
    return lengths


def _upcast(t: Tensor) -> Tensor:
    """Losses and log-probabilities in at least float32."""
    return t if t.dtype == torch.float64 else t.float()
