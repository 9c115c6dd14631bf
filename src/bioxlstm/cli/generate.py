"""`bioxlstm generate`: sample DNA or protein sequences, family members, or molecules."""

from __future__ import annotations

import argparse

from bioxlstm.cli.args import NON_NEGATIVE, NON_NEGATIVE_NUMBER, POSITIVE, add_device, add_seed, number


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="sample sequences from a checkpoint",
        description="Sample one token at a time from the recurrent state. DNA and protein "
                    "checkpoints continue --prompt until the record separator or --length; with "
                    "--msa a protein family is encoded as context and new members are sampled and "
                    "judged. SMILES checkpoints sample molecules (ending at [END], or in context at "
                    "the next '.'), optionally continuing --context-smiles. An option that does not "
                    "apply to the checkpoint is refused. Output: FASTA (or SMILES, one a line) on "
                    "standard output or in --out.")
    p.add_argument("checkpoint", help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--prompt", help="DNA/protein: sequence to continue (default: empty)")
    p.add_argument("--num", type=POSITIVE, help="number of sequences (default 3)")
    p.add_argument("--num-samples", type=POSITIVE, help="number of samples (same as --num)")
    p.add_argument("--length", type=POSITIVE,
                   help="most new tokens per sample (default 100; SMILES: the model's context - 2, "
                        "or in context 150 but at most half the context, the rest holding "
                        "--context-smiles)")
    p.add_argument("--temperature", type=NON_NEGATIVE_NUMBER, default=1.0,
                   help="sampling temperature; 0 means greedy (default 1)")
    p.add_argument("--top-k", type=POSITIVE, help="sample among the k most likely tokens (default: all)")
    p.add_argument("--top-p", type=number(0, 1, above=True),
                   help="nucleus sampling mass in (0, 1] (default: off)")
    add_seed(p)
    p.add_argument("--batch-size", type=POSITIVE, help="SMILES: molecules sampled at once (default 64)")
    p.add_argument("--context-smiles", metavar="DOMAIN.smi",
                   help="SMILES: molecules of a domain (one a line, or '.'-joined) to continue in "
                        "context; each batch sees a fresh random order of them")
    p.add_argument("--num-context", type=NON_NEGATIVE,
                   help="context members per prompt (--msa: homologs, default 100; SMILES: default "
                        "as many as fit the context)")
    p.add_argument("--msa", metavar="FAMILY.a3m",
                   help="protein: family (a3m, Stockholm or aligned FASTA) to continue; samples are "
                        "written with perplexity, identity to the nearest member and HMMER bit score "
                        "against the family's profile HMM")
    p.add_argument("--max-residues", type=POSITIVE,
                   help="with --msa: longest sample (default 1.5 x the longest family member)")
    p.add_argument("--out", help="write the samples to this file (default: standard output)")
    add_device(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from bioxlstm.tasks.generate import GenerateRequest, run_generate

    run_generate(GenerateRequest(
        checkpoint=args.checkpoint, prompt=args.prompt, num=args.num,
        length=args.length, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        seed=args.seed, num_samples=args.num_samples, batch_size=args.batch_size,
        context_smiles=args.context_smiles, num_context=args.num_context, msa=args.msa,
        max_residues=args.max_residues, out=args.out, device=args.device))
