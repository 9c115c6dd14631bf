"""Sampling SMILES from a Chem-xLSTM checkpoint, unconditionally or continuing molecules of a domain.

Sampling runs in batches, one token at a time from the recurrent state (constant memory per token).
Unconditional rows start at [BEG] and end at [END]. In-context rows (docs/model.md, section 8) start with
[BEG] m1 . m2 . ... mK . (K context molecules in a fresh random order for each batch) and the new
molecule ends at the next '.'; a row that reaches the token limit first is kept as it is (it will
mostly count as invalid). A model trained on such rows (its tokenizer says in_context) also ends
a molecule at '.' when it samples without context, from [BEG] alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bioxlstm.data.smiles import (
    HEADERS,
    ValiditySummary,
    entry_smiles,
    line_molecules,
    read_lines,
    valid_smiles,
)
from bioxlstm.data.smiles_batches import icl_row
from bioxlstm.errors import ConfigError
from bioxlstm.model import XLSTMLanguageModel
from bioxlstm.smiles import SmilesTokenizer

IN_CONTEXT_TOKENS = 150  # the default cap of a molecule's tokens in context


@dataclass(frozen=True)
class GenerationConfig:
    """How many molecules to draw and how.

    max_tokens: tokens per new molecule (default: the model's context - 2 unconditionally; in
    context 150, at most half the window, which the context molecules fill). num_context: context
    molecules per batch (default: as many as fit the context).
    """

    num_samples: int = 100
    batch_size: int = 64
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    num_context: int | None = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("num_samples", "batch_size", "max_tokens", "num_context"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"'{name}' must be a positive integer, got {value!r}")
        if self.temperature < 0:
            raise ConfigError(f"'temperature' must be >= 0, got {self.temperature}")


@dataclass(frozen=True)
class ContextMolecules:
    """A domain's molecules usable as context: valid and inside the model's vocabulary."""

    smiles: list[str]
    ids: list[list[int]]
    summary: ValiditySummary
    unknown: int

    def line(self) -> str:
        """One line saying how many context molecules were read, kept and skipped."""
        return (f"{self.summary.line('context molecules')}; {self.unknown:,} with tokens outside the "
                f"vocabulary skipped")


def read_context(path: str | Path, tokenizer: SmilesTokenizer) -> ContextMolecules:
    """Context molecules from a file (one per line; '.'-joined lines are split into molecules).

    Invalid SMILES and molecules with tokens outside the model's vocabulary are skipped and counted;
    a file with none left raises ConfigError.
    """
    lines = read_lines(path)
    if lines and entry_smiles(lines[0]).lower() in HEADERS:
        lines = lines[1:]
    molecules = [m for line in lines for m in line_molecules(line)]
    kept, summary = valid_smiles(molecules)
    known = [s for s in kept if not tokenizer.unknown_tokens(s)]
    if not known:
        raise ConfigError(f"{path}: none of the {len(molecules):,} context molecules is both valid "
                          f"and inside the model's vocabulary")
    return ContextMolecules(known, [tokenizer.encode(s) for s in known], summary,
                            len(kept) - len(known))


def _stop_at(row: list[int], stop: int) -> list[int]:
    return row[: row.index(stop)] if stop in row else row


@torch.no_grad()
def sample_smiles(
    model: XLSTMLanguageModel,
    tokenizer: SmilesTokenizer,
    config: GenerationConfig,
    context: ContextMolecules | None = None,
) -> list[str]:
    """config.num_samples SMILES strings (invalid ones included), in batches of config.batch_size.

    Deterministic for a given seed and batch size.
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(config.seed)
    picker = torch.Generator().manual_seed(config.seed)
    window = model.config.context_length
    if context is None and not tokenizer.in_context:
        stop = tokenizer.eos_id
        max_new = config.max_tokens or max(1, window - 2)
        suppress = [tokenizer.pad_id, tokenizer.bos_id, tokenizer.unk_id]
    else:  # the format of '.'-joined domain rows, where a molecule ends at the next '.'

        stop = tokenizer.separator_id
        max_new = config.max_tokens or min(IN_CONTEXT_TOKENS, window - 2 if context is None
                                           else window // 2)
        suppress = [tokenizer.pad_id, tokenizer.bos_id, tokenizer.unk_id, tokenizer.eos_id]
        if window - max_new < 2:
            raise ConfigError(f"max_tokens={max_new} leaves no room for context in the model's "
                              f"{window}-token window")
    out: list[str] = []
    bar = tqdm(total=config.num_samples, unit="mol", dynamic_ncols=True,
               disable=None if config.progress else True)
    try:
        while len(out) < config.num_samples:
            rows = min(config.batch_size, config.num_samples - len(out))
            prompt = [tokenizer.bos_id] if context is None else _context_prompt(
                tokenizer, context, config.num_context, window - max_new, picker)
            ids = torch.tensor([prompt] * rows, device=device)
            new = model.generate(ids, max_new, config.temperature, config.top_k, config.top_p,
                                 generator, stop_token=stop, suppress_tokens=suppress)[:, len(prompt):]
            out.extend(tokenizer.decode(_stop_at(row, stop)) for row in new.tolist())
            bar.update(rows)
    finally:
        bar.close()
    return out


def _context_prompt(tokenizer: SmilesTokenizer, context: ContextMolecules, num_context: int | None,
                    budget: int, generator: torch.Generator) -> list[int]:
    """[BEG] m1 . ... mK . for a fresh random order of the context, within `budget` tokens."""
    order = torch.randperm(len(context.ids), generator=generator).tolist()[:num_context]
    row = icl_row(tokenizer, context.ids, order, budget - 1)
    return [*row, tokenizer.separator_id]
