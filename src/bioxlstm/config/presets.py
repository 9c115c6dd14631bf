"""The paper's named configurations (and tiny ones for tests and the demo), as plain data."""

from __future__ import annotations

from typing import Any

DNA_VOCAB = 12
PROTEIN_VOCAB = 38
SMILES_VOCAB = 48

PRESETS: dict[str, dict[str, Any]] = {
    "dna-xlstm-500k": dict(alphabet="dna", vocab_size=DNA_VOCAB, d_model=128, num_blocks=5,
                           slstm_at=[0, 1, 2, 3, 4], ffn_proj_factor=1.1, context_length=1024),
    "dna-xlstm-2m": dict(alphabet="dna", vocab_size=DNA_VOCAB, d_model=256, num_blocks=6,
                         slstm_at=[0, 1, 2, 3, 4, 5], ffn_proj_factor=1.1, context_length=1024),
    "dna-xlstm-4m": dict(alphabet="dna", vocab_size=DNA_VOCAB, d_model=256, num_blocks=9,
                         mlstm_heads=4, context_length=32_768),
    "prot-xlstm-26m": dict(alphabet="protein", vocab_size=PROTEIN_VOCAB, d_model=512,
                           num_blocks=16, mlstm_heads=4, rope=True, context_length=131_072),
    "prot-xlstm-102m": dict(alphabet="protein", vocab_size=PROTEIN_VOCAB, d_model=1024,
                            num_blocks=16, mlstm_heads=4, rope=True, context_length=131_072),
    "chem-xlstm-15m": dict(alphabet="smiles", vocab_size=SMILES_VOCAB, d_model=512, num_blocks=9,
                           mlstm_heads=8, dropout=0.25, context_length=100),
    "chem-xlstm-15m-icl": dict(alphabet="smiles", vocab_size=SMILES_VOCAB, d_model=512,
                               num_blocks=9, mlstm_heads=8, dropout=0.25, context_length=4096),
    "tiny-mlstm": dict(alphabet="dna", vocab_size=DNA_VOCAB, d_model=32, num_blocks=2,
                       mlstm_heads=2, context_length=256, chunk_size=16),
    "tiny-slstm": dict(alphabet="dna", vocab_size=DNA_VOCAB, d_model=32, num_blocks=2,
                       slstm_at=[0, 1], slstm_heads=2, context_length=256),
    "tiny-mixed": dict(alphabet="dna", vocab_size=DNA_VOCAB, d_model=32, num_blocks=3,
                       slstm_at=[1], mlstm_heads=2, slstm_heads=2, context_length=256,
                       chunk_size=16),
    "tiny-prot-xlstm": dict(alphabet="protein", vocab_size=PROTEIN_VOCAB, d_model=64, num_blocks=3,
                            mlstm_heads=2, rope=True, context_length=2048, chunk_size=64),
    "tiny-chem-xlstm": dict(alphabet="smiles", vocab_size=SMILES_VOCAB, d_model=64, num_blocks=3,
                            mlstm_heads=2, context_length=100, chunk_size=32),
}

NOMINAL_PARAMS: dict[str, int] = {
    "dna-xlstm-500k": 500_000,
    "dna-xlstm-2m": 2_000_000,
    "dna-xlstm-4m": 4_000_000,
    "prot-xlstm-26m": 26_000_000,
    "prot-xlstm-102m": 102_000_000,
    "chem-xlstm-15m": 15_000_000,
    "chem-xlstm-15m-icl": 15_000_000,
}
