"""`bioxlstm generate`: one request dispatched by the checkpoint's alphabet, every option checked.

An option either applies to the checkpoint (and changes what is generated or where it goes) or
is refused in one line naming it: DNA and protein models continue a prompt (or, for proteins, a
family with --msa), SMILES models sample molecules (optionally in the context of a domain).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from bioxlstm.errors import ConfigError
from bioxlstm.io import atomic_write, check_output_file

# options each kind of generation reads, by request field (the CLI names them --field-name)
OPTIONS = {
    "sequence": {"prompt", "length"},
    "family": {"msa", "num_context", "max_residues"},
    "smiles": {"context_smiles", "num_context", "batch_size", "length"},
}
COMMON = {"checkpoint", "num", "num_samples", "temperature", "top_k", "top_p", "seed", "out", "device"}


@dataclass(frozen=True)
class GenerateRequest:
    """What `bioxlstm generate` was asked; None means "not given"."""

    checkpoint: str | Path
    prompt: str | None = None
    num: int | None = None
    length: int | None = None
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    num_samples: int | None = None
    batch_size: int | None = None
    context_smiles: str | Path | None = None
    num_context: int | None = None
    msa: str | Path | None = None
    max_residues: int | None = None
    out: str | Path | None = None
    device: str = "auto"

    @property
    def count(self) -> int:
        """Sequences to generate: --num-samples, else --num, else 3."""
        return self.num_samples or self.num or 3

    def check_applies(self, kind: str, what: str) -> None:
        """Refuse every given option that `kind` of generation does not read."""
        allowed = OPTIONS[kind] | COMMON
        for name in ("prompt", "num", "length", "num_samples", "batch_size",
                     "context_smiles", "num_context", "msa", "max_residues"):
            if getattr(self, name) not in (None, "") and name not in allowed:
                raise ConfigError(f"--{name.replace('_', '-')} does not apply to {what}")


def run_generate(request: GenerateRequest) -> None:
    """Generate for the request's checkpoint; writes --out or prints to standard output."""
    from bioxlstm.checkpoint import require_lm_head
    from bioxlstm.smiles import SmilesTokenizer
    from bioxlstm.tasks.inputs import checkpoint_vocabulary

    if request.out is not None:
        check_output_file(request.out, "--out")
    require_lm_head(request.checkpoint, "generation")
    vocabulary = checkpoint_vocabulary(request.checkpoint)
    if isinstance(vocabulary, SmilesTokenizer):  # molecules: one SMILES a line, RDKit-checked
        request.check_applies("smiles", "a SMILES checkpoint")
        _generate_smiles(request)
    elif request.msa is not None:
        request.check_applies("family", "family generation (--msa)")
        _generate_family(request)
    else:
        request.check_applies("sequence", "generation from a prompt (use --msa for a protein family, "
                                          "or a SMILES checkpoint for --context-smiles)")
        _generate_sequences(request)


def _emit(text: str, out: str | Path | None, what: str) -> None:
    if out is None:
        print(text, end="")
        return
    atomic_write(Path(out), lambda p: p.write_text(text))
    print(f"wrote {what} to {out}", file=sys.stderr)


def _generate_sequences(request: GenerateRequest) -> None:
    from bioxlstm.tasks.inputs import load_model

    model, alphabet = load_model(request.checkpoint, request.device)
    device = next(model.parameters()).device
    sep = alphabet.stop_id
    prompt = [alphabet.bos_id, *alphabet.encode(request.prompt or "", "--prompt")]
    specials = [alphabet.id(t) for t in alphabet.specials if alphabet.id(t) != sep]
    generator = torch.Generator(device).manual_seed(request.seed)
    out = model.generate(torch.tensor([prompt] * request.count, device=device), request.length or 100,
                         request.temperature, request.top_k, request.top_p, generator,
                         stop_token=sep, suppress_tokens=specials)
    text = "".join(f">generated_{j + 1}\n{alphabet.decode(row)}\n" for j, row in enumerate(out))
    _emit(text, request.out, f"{request.count} sequences")


def _generate_family(request: GenerateRequest) -> None:
    from bioxlstm.tasks.family_generation import FamilyGenerationConfig, fasta_text, run_family_generation

    config = FamilyGenerationConfig(
        num_context=100 if request.num_context is None else request.num_context,
        num_samples=request.count, temperature=request.temperature, top_k=request.top_k,
        top_p=request.top_p, max_residues=request.max_residues, seed=request.seed,
        device=request.device)
    proteins = run_family_generation(request.checkpoint, request.msa, config)
    _emit(fasta_text(proteins), request.out, f"{len(proteins)} sequences")


def _generate_smiles(request: GenerateRequest) -> None:
    from bioxlstm.devices import resolve_device
    from bioxlstm.tasks.molecule_generation import GenerationConfig, read_context, sample_smiles
    from bioxlstm.tasks.pretrain_smiles import load_smiles_model

    if request.num_context is not None and not request.context_smiles:
        raise ConfigError("--num-context needs --context-smiles")
    model, tokenizer = load_smiles_model(request.checkpoint, resolve_device(request.device))
    context = read_context(request.context_smiles, tokenizer) if request.context_smiles else None
    if context is not None:
        print(context.line(), file=sys.stderr)
    config = GenerationConfig(num_samples=request.count, batch_size=request.batch_size or 64,
                              temperature=request.temperature, top_k=request.top_k,
                              top_p=request.top_p, max_tokens=request.length,
                              num_context=request.num_context, seed=request.seed)
    smiles = sample_smiles(model, tokenizer, config, context)
    _emit("".join(f"{s}\n" for s in smiles), request.out, f"{len(smiles):,} SMILES")
