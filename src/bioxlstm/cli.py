"""`bioxlstm <command>`: parses arguments and calls the tasks; holds no logic of its own."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bioxlstm import __version__
from bioxlstm.allocator import retain_freed_memory
from bioxlstm.errors import BioXLSTMError, ConfigError


def _presets(args: argparse.Namespace) -> None:
    import torch

    from bioxlstm.config import NOMINAL_PARAMS, PRESETS, preset
    from bioxlstm.model import XLSTMLanguageModel

    print(f"{'preset':<20}{'alphabet':<10}{'d':>6}{'blocks':>8}{'sLSTM at':>14}{'context':>10}"
          f"{'parameters':>14}{'vs name':>9}")
    for name in PRESETS:
        config = preset(name)
        with torch.device("meta"):
            n = XLSTMLanguageModel(config).num_parameters()
        nominal = NOMINAL_PARAMS.get(name)
        ratio = f"{(n / nominal - 1) * 100:+.1f}%" if nominal else "-"
        slstm = ",".join(map(str, config.slstm_at)) or "-"
        print(f"{name:<20}{config.alphabet or '-':<10}{config.d_model:>6}{config.num_blocks:>8}"
              f"{slstm:>14}{config.context_length:>10}{n:>14,}{ratio:>9}")


def _kernels(args: argparse.Namespace) -> None:
    from bioxlstm.layers.cpu_build import extensions_disabled
    from bioxlstm.layers.cpu_kernels import KERNELS, build_cpu_kernels

    if extensions_disabled():
        print("BIOXLSTM_NO_EXTENSIONS=1 is set: every CPU kernel is off, the PyTorch code runs")
        return
    print(f"building or loading {len(KERNELS)} CPU kernels (25-60 s each the first time)",
          flush=True)

    def report(name: str, ok: bool, seconds: float) -> None:
        status = "ready" if ok else "unavailable, the PyTorch code runs instead"
        print(f"  {name:<20}{status} ({seconds:.1f} s)", flush=True)

    build_cpu_kernels(report)


def _pretrain(args: argparse.Namespace) -> None:
    from bioxlstm.config import ModelConfig, preset
    from bioxlstm.train import TrainConfig

    model_config = ModelConfig.from_file(args.model_config) if args.model_config else preset(args.preset)
    switches = {k: True for k in ("bidirectional", "rc_equivariant") if getattr(args, k)}
    if switches:
        model_config = ModelConfig.from_dict({**model_config.to_dict(), **switches})
    train_config = TrainConfig.from_file(args.train_config) if args.train_config else TrainConfig()
    overrides = {k: v for k, v in (("max_steps", args.steps), ("batch_size", args.batch_size),
                                   ("lr", args.lr), ("seed", args.seed), ("device", args.device))
                 if v is not None}
    train_config = TrainConfig.from_dict({**train_config.to_dict(), **overrides})
    seq_len = args.seq_len or model_config.context_length
    if args.genome:
        from bioxlstm.data.genome_windows import WindowConfig
        from bioxlstm.tasks.pretrain import GenomeData, pretrain_genome

        data = GenomeData(args.genome, args.intervals, tuple(args.valid_chroms),
                          tuple(args.test_chroms))
        windows = WindowConfig(seq_len, train_config.batch_size, args.objective, args.rc_aug)
        pretrain_genome(data, model_config, train_config, args.run_dir, windows, args.resume)
    elif args.msa_dir:
        from bioxlstm.data.fim import FIMConfig
        from bioxlstm.tasks.pretrain_msa import pretrain_msa

        if args.objective != "clm" or args.intervals or args.rc_aug:
            raise ConfigError("--objective mlm, --intervals and --rc-aug need --genome")
        pretrain_msa(args.msa_dir, model_config, train_config, args.run_dir, seq_len,
                     args.valid_fraction, args.test_fraction, FIMConfig(args.fim_rate),
                     resume=args.resume)
    elif args.smiles or args.smiles_domains:
        from bioxlstm.tasks.pretrain_smiles import SmilesData, pretrain_smiles

        if args.objective != "clm" or args.intervals or args.rc_aug or args.seq_len:
            raise ConfigError("--objective mlm, --intervals, --rc-aug and --seq-len do not apply to "
                              "SMILES (rows are whole molecules up to the model's context)")
        data = SmilesData(args.smiles or args.smiles_domains, bool(args.smiles_domains),
                          args.valid_fraction, train_config.seed)
        pretrain_smiles(data, model_config, train_config, args.run_dir, resume=args.resume)
    else:
        from bioxlstm.tasks.pretrain import pretrain_fasta

        if args.objective != "clm" or args.intervals or args.rc_aug:
            raise ConfigError("--objective mlm, --intervals and --rc-aug need --genome")
        pretrain_fasta(args.fasta, model_config, train_config, args.run_dir, seq_len,
                       args.valid_fraction, resume=args.resume)
    from bioxlstm.distributed import env_from_torchrun

    if env_from_torchrun().is_main:
        print(f"checkpoint: {Path(args.run_dir) / 'checkpoint'}")


def _generate(args: argparse.Namespace) -> None:
    import torch

    from bioxlstm.alphabets import get_alphabet
    from bioxlstm.model import XLSTMLanguageModel
    from bioxlstm.tasks.pretrain import SEPARATORS
    from bioxlstm.tasks.pretrain_smiles import is_smiles_checkpoint

    if is_smiles_checkpoint(args.checkpoint):
        _generate_smiles(args)
        return
    if args.msa:
        _generate_family(args)
        return
    model = XLSTMLanguageModel.from_pretrained(args.checkpoint).eval()
    alphabet = get_alphabet(args.alphabet or model.config.alphabet or "dna")
    sep = alphabet.id(SEPARATORS[alphabet.name])
    prompt = [sep, *alphabet.encode(args.prompt, "prompt")]
    specials = [alphabet.id(t) for t in alphabet.specials if alphabet.id(t) != sep]
    generator = torch.Generator().manual_seed(args.seed)
    out = model.generate(torch.tensor([prompt] * args.num), args.length, args.temperature,
                         args.top_k, args.top_p, generator, stop_token=sep,
                         suppress_tokens=specials)
    for j, row in enumerate(out):
        print(f">generated_{j + 1}\n{alphabet.decode(row)}")


def _generate_family(args: argparse.Namespace) -> None:
    from bioxlstm.tasks.family_generation import FamilyGenerationConfig, run_family_generation, write_fasta

    if args.prompt:
        raise ConfigError("--prompt does not apply with --msa: samples start after the homologs")
    config = FamilyGenerationConfig(
        num_context=100 if args.num_context is None else args.num_context,
        num_samples=args.num_samples or args.num, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, max_residues=args.max_residues, seed=args.seed, device=args.device)
    proteins = run_family_generation(args.checkpoint, args.msa, config, args.out)
    if args.out:
        print(f"wrote {len(proteins)} sequences to {args.out}", file=sys.stderr)
    else:
        print(write_fasta(proteins, None), end="")


def _generate_smiles(args: argparse.Namespace) -> None:
    from bioxlstm.tasks.molecule_generation import GenerationConfig, read_context, sample_smiles, write_smiles
    from bioxlstm.tasks.pretrain_smiles import load_smiles_model
    from bioxlstm.train import resolve_device

    if args.prompt:
        raise ConfigError("--prompt does not apply to SMILES models; use --context-smiles")
    if args.num_context is not None and not args.context_smiles:
        raise ConfigError("--num-context needs --context-smiles")
    model, tokenizer = load_smiles_model(args.checkpoint, resolve_device(args.device))
    context = read_context(args.context_smiles, tokenizer) if args.context_smiles else None
    if context is not None:
        print(context.line(), file=sys.stderr)
    config = GenerationConfig(num_samples=args.num_samples or args.num, batch_size=args.batch_size,
                              temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              max_tokens=args.length, num_context=args.num_context, seed=args.seed)
    smiles = sample_smiles(model, tokenizer, config, context)
    if args.out:
        print(f"wrote {len(smiles):,} SMILES to {write_smiles(args.out, smiles)}", file=sys.stderr)
    else:
        print("\n".join(smiles))


def _evaluate_molecules(args: argparse.Namespace) -> None:
    from bioxlstm.tasks.evaluate_molecules import evaluate_molecule_file, metrics_table

    result = evaluate_molecule_file(args.generated, args.reference, args.train, args.out,
                                    args.device, args.seed)
    print(metrics_table(result))
    if args.out:
        print(f"wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'properties.png'}",
              file=sys.stderr)


def _plot(args: argparse.Namespace) -> None:
    from bioxlstm.tasks.plot_run import plot_run

    print(f"wrote {plot_run(args.run_dir, args.out)}")


def _demo(args: argparse.Namespace) -> None:
    from bioxlstm.tasks.demo import run_demo

    run_demo(args.run_dir, args.steps, seed=args.seed)


def _finetune(args: argparse.Namespace) -> None:
    from bioxlstm.data.labelled import Columns
    from bioxlstm.tasks.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(
        epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
        warmup_fraction=args.warmup_fraction, batch_size=args.batch_size,
        max_length=args.max_length, freeze_backbone=args.freeze_backbone, rc_conjoin=args.rc_conjoin,
        valid_fraction=args.valid_fraction, test_fraction=args.test_fraction, select=args.select,
        seed=args.seed, device=args.device)
    columns = Columns(args.sequence_column, args.label_column, args.id_column)
    result = finetune(args.train, args.out, config, test=args.test, checkpoint=args.checkpoint,
                      preset_name=args.preset, columns=columns)
    scores = "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
    print(f"test: {scores}  (best epoch {result.best_epoch} of {args.epochs}, by valid "
          f"{args.select})")
    print(f"outputs: {result.out_dir} (predictions.csv, metrics.json, run.json, classifier/)")


def _embed(args: argparse.Namespace) -> None:
    from bioxlstm.tasks.embed import EmbedConfig, embed_fasta

    config = EmbedConfig(batch_size=args.batch_size, chunk_tokens=args.chunk_tokens,
                         device=args.device)
    result = embed_fasta(args.fasta, args.checkpoint, args.out, args.per_token, config)
    print(f"embedded {result.records} records ({result.dim} dimensions): "
          f"{', '.join(map(str, result.files))}")


def _fitness(args: argparse.Namespace) -> None:
    from bioxlstm.tasks.fitness import FitnessConfig, run_fitness

    config = FitnessConfig(
        num_homologs=args.num_homologs if args.msa else 0, replicates=args.replicates,
        identity=args.identity, first_position=args.first_position, batch_size=args.batch_size,
        chunk_tokens=args.chunk_tokens, seed=args.seed, device=args.device)
    result = run_fitness(args.checkpoint, args.dms, args.out, config, msa=args.msa,
                         wild_type=args.wt, score_column=args.score_column)
    skipped = [(m, st, msg) for m, st, msg in zip(result.mutants, result.statuses, result.messages)
               if st != "ok"]
    for mutant, status, message in skipped[:5]:
        print(f"skipped {mutant}: {status}: {message}", file=sys.stderr)
    if len(skipped) > 5:
        print(f"... and {len(skipped) - 5} more skipped (see the status column)", file=sys.stderr)
    print(f"{result.summary()}; scores: {args.out}")


def _score(args: argparse.Namespace) -> None:
    from bioxlstm.errors import ConfigError
    from bioxlstm.tasks.score import ScoreConfig, score_fasta, score_variants

    config = ScoreConfig(batch_size=args.batch_size, chunk_tokens=args.chunk_tokens,
                         window=args.window, device=args.device)
    if args.fasta is not None:
        count = score_fasta(args.fasta, args.checkpoint, args.out, config)
        print(f"scored {count} sequences", file=sys.stderr)
        return
    if args.genome is None:
        raise ConfigError("--variants needs --genome (the reference FASTA the positions refer to)")
    print(score_variants(args.variants, args.genome, args.checkpoint, args.out, config).line(),
          file=sys.stderr)


def _add_batching_options(p: argparse.ArgumentParser, items: str) -> None:
    """--batch-size, --chunk-tokens and --device of the commands that run a model over inputs."""
    p.add_argument("--batch-size", type=int, default=16, help=f"{items} per batch (default 16)")
    p.add_argument("--chunk-tokens", type=int, default=4096,
                   help="tokens run at once per sequence; longer ones go in pieces carrying the "
                        "recurrent state (default 4096)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bioxlstm",
        description="xLSTM language models for DNA, proteins and small molecules (pure PyTorch).")
    parser.add_argument("--version", action="version", version=f"bioxlstm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("presets", help="list the named model configurations and their sizes",
                       description="Print every preset with its shape and exact parameter count.")
    p.set_defaults(func=_presets)

    p = sub.add_parser(
        "kernels", help="build the optional CPU kernels now and say which are available",
        description="Compile (or load from torch's cache) every optional C++ CPU kernel: the "
                    "mLSTM cell, input side and output gate, the sLSTM scan and input side, the "
                    "GELU gate and the generation step. Each builds on first use anyway (25-60 s "
                    "apiece, cached per machine); run this once after installing, e.g. in a "
                    "container image, to keep that time out of the first training steps. A kernel "
                    "that cannot be built (no C++ compiler) is reported; its PyTorch form runs.")
    p.set_defaults(func=_kernels)

    p = sub.add_parser(
        "pretrain", aliases=["train"],
        help="pretrain on a genome (CLM/MLM), FASTA records, MSA families or SMILES",
        description="Pretrain an xLSTM LM. With --genome: random windows of the train split of a "
                    "genome FASTA (plain or bgzip, random access), split by a BED file of "
                    "intervals (chrom start end train|valid|test, the HyenaDNA convention) or by "
                    "whole chromosomes (--valid-chroms), validated on the valid split, with "
                    "reverse-complement augmentation (--rc-aug). With --fasta: causal LM on the "
                    "records of a FASTA file, the last --valid-fraction held out. With "
                    "--msa-dir (proteins): one family per sample, members in random order with "
                    "fill-in-the-middle and per-sequence position ids, split by family "
                    "(docs/protein.md). With --smiles: one molecule per row (invalid SMILES "
                    "counted and skipped, vocabulary learned from the file); --smiles-domains: "
                    "in-context rows of one domain's molecules (docs/chem.md). Writes "
                    "metrics.jsonl, run.json and checkpoint/ into --run-dir; --resume continues "
                    "exactly where the last checkpoint stopped. Runs unchanged under torchrun "
                    "(DDP, or FSDP with 'distributed: fsdp' in --train-config; docs/scaling.md).")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--preset", default="dna-xlstm-500k", help="named model (see `presets`)")
    model.add_argument("--model-config", help="YAML model config (may start from `preset:`)")
    p.add_argument("--bidirectional", action="store_true",
                   help="make the model bidirectional (weight-shared directions; needs mlm)")
    p.add_argument("--rc-equivariant", action="store_true",
                   help="make the model RC-equivariant by parameter sharing (DNA; needs mlm)")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--genome", help="genome FASTA, plain or bgzip (indexed with pyfaidx)")
    data.add_argument("--fasta", help="FASTA file of records, plain or gzip (causal LM)")
    data.add_argument("--msa-dir", help="directory of protein families (a3m/Stockholm/aligned "
                                        "FASTA files, or OpenProteinSet-style subdirectories): "
                                        "homology-aware training with fill-in-the-middle, split "
                                        "by family (--seq-len: tokens per family context)")
    data.add_argument("--smiles", help="molecules, one SMILES a line (.smi/.txt/.csv, gzip allowed): "
                                       "Chem-xLSTM causal LM, [BEG] smiles [END] per row; invalid "
                                       "SMILES are counted and skipped")
    data.add_argument("--smiles-domains", help="molecular domains, one a line ('.'-joined SMILES): "
                                               "in-context training, rows of one domain's molecules "
                                               "in random order up to the context; split by domain")
    p.add_argument("--intervals", help="BED file: chrom, start, end, split (with --genome)")
    p.add_argument("--valid-chroms", nargs="+", default=[], metavar="CHROM",
                   help="without --intervals: chromosomes held out for validation")
    p.add_argument("--test-chroms", nargs="+", default=[], metavar="CHROM",
                   help="without --intervals: chromosomes held out for testing")
    p.add_argument("--objective", choices=("clm", "mlm"), default="clm",
                   help="causal LM, or masked LM: 15%% of bases, 80/10/10 (default clm)")
    p.add_argument("--rc-aug", type=float, default=0.0, metavar="P",
                   help="reverse-complement each training window with probability P (default 0; "
                        "0.5 for post-hoc conjoined models)")
    p.add_argument("--run-dir", required=True, help="output directory of the run")
    p.add_argument("--train-config", help="YAML training config (TrainConfig fields)")
    p.add_argument("--steps", type=int, help="optimiser steps (overrides the config)")
    p.add_argument("--batch-size", type=int,
                   help="global micro-batch: sequences per micro-step summed over all processes; "
                        "under torchrun each of N ranks trains on BATCH_SIZE/N of them (must "
                        "divide), so results do not depend on the number of processes")
    p.add_argument("--seq-len", type=int, help="tokens per window (default: the model's context)")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--valid-fraction", type=float, default=0.1,
                   help="with --fasta: held-out tail of the tokens; with --msa-dir: share of "
                        "families held out for validation; with --smiles / --smiles-domains: "
                        "share of molecules / domains held out (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="with --msa-dir: share of families held out for testing, listed in "
                        "run-dir/families.json (default 0.1)")
    p.add_argument("--fim-rate", type=float, default=1.0,
                   help="with --msa-dir: mean number of fill-in-the-middle spans per sequence "
                        "(Poisson, at most 5; default 1)")
    p.add_argument("--resume", action="store_true", help="continue from run-dir/checkpoint")
    p.set_defaults(func=_pretrain)

    p = sub.add_parser("generate", help="sample sequences from a checkpoint",
                       description="Sample sequences one token at a time from the recurrent state; "
                                   "a sequence ends at the record separator or after --length. "
                                   "SMILES checkpoints: molecules end at [END], or in context "
                                   "(--context-smiles) at the next '.'.")
    p.add_argument("checkpoint", help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--prompt", default="", help="sequence to continue (default: empty)")
    p.add_argument("--alphabet", help="dna or protein (default: the checkpoint's)")
    p.add_argument("--num", type=int, default=3, help="number of sequences (default 3)")
    p.add_argument("--length", type=int, default=100, help="new tokens per sequence (default 100)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 means greedy (default 1)")
    p.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, help="nucleus sampling mass in (0, 1]")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--num-samples", type=int,
                   help="number of samples (SMILES: molecules, drawn in batches; default --num)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="SMILES: molecules sampled at once (default 64)")
    p.add_argument("--context-smiles", metavar="DOMAIN.smi",
                   help="SMILES: molecules of a domain (one a line, or '.'-joined) to continue in "
                        "context; each batch sees a fresh random order of them")
    p.add_argument("--num-context", type=int,
                   help="context molecules per prompt (SMILES: default as many as fit the context)")
    p.add_argument("--out", help="SMILES: write the samples to this .smi file (default: standard "
                                 "output)")
    p.add_argument("--device", default="cpu", help="SMILES: cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--msa", metavar="FAMILY.a3m",
                   help="protein: family (a3m, Stockholm or aligned FASTA) to continue: "
                        "--num-context homologs (default 100) are encoded as context, then "
                        "--num-samples new members are sampled until the next <cls> and written "
                        "as FASTA with perplexity, identity to the nearest member and HMMER bit "
                        "score against the family's profile HMM")
    p.add_argument("--max-residues", type=int,
                   help="with --msa: longest sample (default 1.5 x the longest family member)")
    p.set_defaults(func=_generate)

    p = sub.add_parser("evaluate-molecules", help="validity, novelty, FCD, ... of generated SMILES",
                       description="Metrics of generated molecules (RDKit, fcd_torch): validity, "
                                   "uniqueness, novelty against --train and --reference, unique "
                                   "Bemis-Murcko scaffolds, internal diversity, the Frechet ChemNet "
                                   "Distance to --reference, and property means. Prints a table; "
                                   "--out DIR also gets metrics.json and properties.png.")
    p.add_argument("generated", help="generated SMILES, one a line (blank lines count as invalid)")
    p.add_argument("--reference", help="reference SMILES (held-out or domain molecules) for FCD, "
                                       "reference novelty and the property plot")
    p.add_argument("--train", help="training SMILES, for novelty")
    p.add_argument("--out", help="directory for metrics.json and properties.png")
    p.add_argument("--device", default="cpu", help="device for ChemNet (default cpu)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the subset used for internal diversity (default 0)")
    p.set_defaults(func=_evaluate_molecules)

    p = sub.add_parser("plot", help="draw a run's loss, perplexity and learning-rate curves",
                       description="Read RUN_DIR/metrics.jsonl and draw training and validation "
                                   "loss, perplexity and the learning rate against step to a PNG.")
    p.add_argument("run_dir", help="run directory (holds metrics.jsonl)")
    p.add_argument("--out", help="PNG path (default RUN_DIR/curves.png)")
    p.set_defaults(func=_plot)

    p = sub.add_parser("demo", help="pretrain, fine-tune and sample a small DNA-xLSTM on human data",
                       description="The tour on bundled human DNA: pretrain a small DNA-xLSTM "
                                   "(held-out chr22 window for validation), compare with k-mer "
                                   "baselines, fine-tune on promoter sequences, generate.")
    p.add_argument("--run-dir", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("finetune", help="fine-tune a checkpoint as a sequence classifier",
                       description="Sequence classification: a pretrained backbone (or a fresh "
                                   "preset, as a from-scratch baseline), mean pooling over the bases "
                                   "and a linear head, trained with AdamW and a warmup+cosine schedule. "
                                   "10%% of --train is held out to choose the best epoch. Data: CSV/TSV "
                                   "with 'sequence' and 'label' columns (gzip allowed) or FASTA with "
                                   "'>id label=VALUE' headers. Writes predictions.csv, metrics.json, "
                                   "run.json and classifier/ into --out.")
    backbone = p.add_mutually_exclusive_group(required=True)
    backbone.add_argument("--checkpoint", help="pretrained checkpoint directory to fine-tune")
    backbone.add_argument("--preset", help="train this preset from scratch instead (see `presets`)")
    p.add_argument("--train", required=True, help="labelled training sequences (CSV, TSV or FASTA)")
    p.add_argument("--test", help="labelled test sequences (default: a seeded split of --train)")
    p.add_argument("--out", required=True, help="output directory (must not hold a run)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training set (default 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per batch (default 32)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default 0.1)")
    p.add_argument("--warmup-fraction", type=float, default=0.1,
                   help="share of steps spent warming up (default 0.1)")
    p.add_argument("--max-length", type=int,
                   help="truncate sequences to this many bases (default: the model's context - 1)")
    p.add_argument("--freeze-backbone", action="store_true",
                   help="train only the linear head (a linear probe)")
    p.add_argument("--rc-conjoin", action="store_true",
                   help="DNA: train with reverse-complement augmentation and predict with the "
                        "mean of both strands' logits (post-hoc conjoining)")
    p.add_argument("--select", choices=("accuracy", "mcc"), default="accuracy",
                   help="validation metric that picks the best epoch (default accuracy)")
    p.add_argument("--valid-fraction", type=float, default=0.1,
                   help="share of --train held out for model selection (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="share of --train used as test set when there is no --test (default 0.1)")
    p.add_argument("--sequence-column", default="sequence", help="sequence column (default sequence)")
    p.add_argument("--label-column", default="label",
                   help="label column, or the header key in FASTA (default label)")
    p.add_argument("--id-column", help="column of record ids (default: row numbers)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    p.set_defaults(func=_finetune)

    p = sub.add_parser("embed", help="per-sequence (and per-base) embeddings of a FASTA file",
                       description="Mean-pooled hidden states of each record, written as .npy (N x d "
                                   "float32, ids in <out>.ids.txt) or .parquet (id, embedding; needs "
                                   "pyarrow); --per-token adds an .npz of (length x d) arrays keyed by "
                                   "record id. Long records run in pieces of --chunk-tokens carrying "
                                   "the recurrent state, so memory stays bounded.")
    p.add_argument("checkpoint", help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--fasta", required=True, help="FASTA file, plain or gzip")
    p.add_argument("--out", required=True, help="pooled embeddings: .npy or .parquet")
    p.add_argument("--per-token", help="also write per-base embeddings to this .npz")
    _add_batching_options(p, "records")
    p.set_defaults(func=_embed)

    p = sub.add_parser("score", help="log-likelihood of sequences, or of variants (LLR)",
                       description="With --fasta: per record the log-likelihood (natural log) of its "
                                   "bases, the mean per base and the perplexity. With --variants and "
                                   "--genome: for each row (chrom, pos 1-based, ref, alt) "
                                   "llr = log p(alt window) - log p(ref window), averaged over both "
                                   "strands; rows that cannot be scored keep a status and message. "
                                   "Writes TSV to --out (default: standard output).")
    p.add_argument("checkpoint", help="causal checkpoint directory (config.json + model.safetensors)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--fasta", help="FASTA file of sequences to score")
    what.add_argument("--variants", help="TSV/CSV/VCF table with chrom, pos, ref, alt columns")
    p.add_argument("--genome", help="reference FASTA (plain or bgzip) for --variants")
    p.add_argument("--out", default="-", help="output TSV (default '-': standard output)")
    p.add_argument("--window", type=int, default=1024,
                   help="bases around each variant, clipped at chromosome ends (default 1024)")
    _add_batching_options(p, "sequences or variants")
    p.set_defaults(func=_score)

    p = sub.add_parser("fitness", help="variant fitness of a deep mutational scan (protein, FIM)",
                       description="Score substitutions with a homology-aware protein model: for "
                                   "each site the FIM query '<cls> WT with <mask-1> at p <eos> "
                                   "<mask-1>' gives log p(amino acid at p); a variant scores "
                                   "log p(mut) - log p(wt), multi-mutants add single effects. With "
                                   "--msa the query follows homologs drawn with sequence weights "
                                   "(1 / neighbours above --identity) plus the wild type, averaged "
                                   "over --replicates draws; without it (or --num-homologs 0) the "
                                   "query stands alone. Writes a CSV of scores and prints the "
                                   "Spearman correlation with the measured scores.")
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
    p.add_argument("--first-position", type=int, default=1,
                   help="number of the wild type's first residue in the mutant names (default 1)")
    p.add_argument("--num-homologs", type=int, default=200,
                   help="homologs per context; 0 means zero context (default 200)")
    p.add_argument("--replicates", type=int, default=3,
                   help="context draws averaged per variant (default 3)")
    p.add_argument("--identity", type=float, default=0.8,
                   help="identity threshold of the sequence-weight neighbours (default 0.8)")
    p.add_argument("--batch-size", type=int, default=16, help="queries per batch (default 16)")
    p.add_argument("--chunk-tokens", type=int, default=2048,
                   help="context tokens run at once, carrying the state (default 2048)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    p.set_defaults(func=_fitness)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    retain_freed_memory()
    try:
        args.func(args)
    except BioXLSTMError as err:
        print(f"bioxlstm: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bioxlstm: interrupted", file=sys.stderr)
        return 130
    return 0
