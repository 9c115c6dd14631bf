"""`bioxlstm embed`, `score` and `fitness`: run a checkpoint over sequences, variants or assays."""

from __future__ import annotations

import argparse
import sys

from bioxlstm.cli.args import NON_NEGATIVE, POSITIVE, add_batching, add_device, add_seed, integer, number


def register(sub: argparse._SubParsersAction) -> None:
    _register_embed(sub)
    _register_score(sub)
    _register_fitness(sub)


def _register_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed", help="per-sequence (and per-token) embeddings of a FASTA or SMILES file",
        description="Mean-pooled hidden states of each record (FASTA with a DNA or protein model) or "
                    "molecule (--smiles with a SMILES model), written as .npy (N x d float32, ids "
                    "in <out>.ids.txt) or .parquet (id, embedding; needs pyarrow); --per-token adds "
                    "an .npz of (length x d) arrays keyed by record id. Long records run in pieces "
                    "of --chunk-tokens carrying the recurrent state, so memory stays bounded.")
    p.add_argument("checkpoint", help="checkpoint directory (config.json + model.safetensors)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--fasta", help="FASTA file of sequences, plain or gzip (DNA or protein model)")
    source.add_argument("--smiles", help="molecules, one SMILES a line with an optional name column "
                                         "(.smi/.csv, gzip allowed; a SMILES model)")
    p.add_argument("--out", required=True, help="pooled embeddings: .npy or .parquet")
    p.add_argument("--per-token", help="also write per-base embeddings to this .npz")
    add_batching(p, "records")
    p.set_defaults(func=run_embed)


def run_embed(args: argparse.Namespace) -> None:
    from bioxlstm.tasks.embed import EmbedConfig, embed_fasta

    config = EmbedConfig(batch_size=args.batch_size, chunk_tokens=args.chunk_tokens,
                         device=args.device)
    result = embed_fasta(args.fasta, args.checkpoint, args.out, args.per_token, config,
                         smiles=args.smiles)
    print(f"embedded {result.records} records ({result.dim} dimensions): "
          f"{', '.join(map(str, result.files))}")


def _register_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score", help="log-likelihood of sequences, or of variants (LLR)",
        description="With --fasta: per record the log-likelihood (natural log) of its bases, the mean "
                    "per base and the perplexity. With --variants and --genome: for each row "
                    "(chrom, pos 1-based, ref, alt) llr = log p(alt window) - log p(ref window), "
                    "averaged over both strands; rows that cannot be scored keep a status and "
                    "message. Writes TSV to --out (default: standard output).")
    p.add_argument("checkpoint", help="causal checkpoint directory (config.json + model.safetensors)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--fasta", help="FASTA file of sequences to score")
    what.add_argument("--variants", help="TSV/CSV/VCF table with chrom, pos, ref, alt columns")
    p.add_argument("--genome", help="reference FASTA (plain or bgzip) for --variants")
    p.add_argument("--out", default="-", help="output TSV (default '-': standard output)")
    p.add_argument("--window", type=integer(2), default=1024,
                   help="bases around each variant, clipped at chromosome ends (default 1024)")
    add_batching(p, "sequences (a variant takes four: ref and alt windows on both strands)")
    p.set_defaults(func=run_score)


def run_score(args: argparse.Namespace) -> None:
    from bioxlstm.tasks.score import ScoreConfig, run_score

    config = ScoreConfig(batch_size=args.batch_size, chunk_tokens=args.chunk_tokens,
                         window=args.window, device=args.device)
    print(run_score(args.checkpoint, args.out, config, fasta=args.fasta, variants=args.variants,
                    genome=args.genome), file=sys.stderr)


def _register_fitness(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fitness", help="variant fitness of a deep mutational scan (protein, FIM)",
        description="Score substitutions with a homology-aware protein model: for each site the FIM "
                    "query '<cls> WT with <mask-1> at p <eos> <mask-1>' gives log p(amino acid at "
                    "p); a variant scores log p(mut) - log p(wt), multi-mutants add single effects. "
                    "With --msa the query follows homologs drawn with sequence weights (1 / "
                    "neighbours above --identity) plus the wild type, averaged over --replicates "
                    "draws; without it (or --num-homologs 0) the query stands alone. Writes a CSV of "
                    "scores and prints the Spearman correlation with the measured scores.")
    p.add_argument("checkpoint", help="protein checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--dms", required=True,
                   help="assay CSV/TSV with 'mutant' (A23V or A23V:G45W) and a score column, or a "
                        "headerless list of mutants (gzip allowed)")
    p.add_argument("--msa", help="family of the protein (a3m, Stockholm or aligned FASTA) for the "
                                 "homolog context; its first record is the default wild type")
    p.add_argument("--wt", help="wild-type sequence, or a FASTA file whose first record it is")
    p.add_argument("--out", required=True, help="output CSV of per-variant scores")
    p.add_argument("--score-column", default="DMS_score",
                   help="measured score column of --dms (default DMS_score)")
    p.add_argument("--first-position", type=integer(), default=1,
                   help="number of the wild type's first residue in the mutant names (default 1)")
    p.add_argument("--num-homologs", type=NON_NEGATIVE, default=200,
                   help="homologs per context; 0 means zero context (default 200)")
    p.add_argument("--replicates", type=POSITIVE, default=3,
                   help="context draws averaged per variant (default 3)")
    p.add_argument("--identity", type=number(0, 1, above=True), default=0.8,
                   help="identity threshold of the sequence-weight neighbours, in (0, 1] (default 0.8)")
    p.add_argument("--include-synonymous", action="store_true",
                   help="count synonymous rows (no amino acid change, score 0) in the Spearman "
                        "correlation; by default they are scored but left out, as are rows without "
                        "a measurement (NA)")
    p.add_argument("--batch-size", type=POSITIVE, default=16, help="queries per batch (default 16)")
    p.add_argument("--chunk-tokens", type=integer(2), default=2048,
                   help="context tokens run at once, carrying the state (default 2048)")
    add_seed(p)
    add_device(p)
    p.set_defaults(func=run_fitness)


def run_fitness(args: argparse.Namespace) -> None:
    from bioxlstm.tasks.fitness import FitnessConfig, run_fitness

    config = FitnessConfig(
        num_homologs=args.num_homologs if args.msa else 0, replicates=args.replicates,
        identity=args.identity, first_position=args.first_position, batch_size=args.batch_size,
        chunk_tokens=args.chunk_tokens, seed=args.seed, device=args.device,
        include_synonymous=args.include_synonymous)
    result = run_fitness(args.checkpoint, args.dms, args.out, config, msa=args.msa,
                         wild_type=args.wt, score_column=args.score_column)
    skipped = [(m, st, msg) for m, st, msg in zip(result.mutants, result.statuses, result.messages)
               if st not in ("ok", "synonymous")]
    for mutant, status, message in skipped[:5]:
        print(f"skipped {mutant}: {status}: {message}", file=sys.stderr)
    if len(skipped) > 5:
        print(f"... and {len(skipped) - 5} more skipped (see the status column)", file=sys.stderr)
    print(f"{result.summary()}; scores: {args.out}")
