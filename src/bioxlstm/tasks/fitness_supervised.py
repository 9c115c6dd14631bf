"""Supervised protein fitness: regression on a split of a deep mutational scan's variants, tested by
Spearman's rho on the rest beside the baseline and the zero-shot FIM score of `fitness`.

Each measured variant becomes its full sequence (the wild type with its substitutions). Splits:
`random` holds out a seeded share of the variants; `position` holds out whole positions (seeded),
so no test variant touches a position seen in training (a multi-mutant spanning both sides is
left out, and counted). Outputs in `out_dir`: data/train.csv and data/test.csv, finetune/ (the
fine-tuning run), zero_shot.csv and summary.json.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bioxlstm.checkpoint import load_config, require_lm_head
from bioxlstm.data.dms import Variant, check_mutant, read_assay
from bioxlstm.data.labelled import Columns
from bioxlstm.errors import ConfigError
from bioxlstm.io import atomic_write, check_output_dir
from bioxlstm.metrics import spearman
from bioxlstm.tasks.finetune import FinetuneConfig, finetune
from bioxlstm.tasks.finetune_report import metrics_table, write_json
from bioxlstm.train_state import versions

SPLITS = ("random", "position")


@dataclass
class SupervisedFitnessConfig:
    """The split and the zero-shot comparison; `finetune` holds the training protocol (a regression
    selected by Spearman, the one-hot baseline by default)."""

    split: str = "random"
    test_fraction: float = 0.2
    score_column: str = "DMS_score"
    first_position: int = 1
    zero_shot: bool = True
    num_homologs: int = 0
    replicates: int = 1
    identity: float = 0.8
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(
        select="spearman", baseline="onehot", task="regression"))

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"--test-fraction must be in (0, 1), got {self.test_fraction!r}")


@dataclass
class SupervisedFitnessResult:
    """Spearman on the test variants per method, the counts of the split, and the printed table."""

    spearman: dict[str, float]
    counts: dict[str, int]
    table: str
    out_dir: Path


def split_variants(variants: list[Variant], how: str, fraction: float, seed: int
                   ) -> tuple[list[int], list[int], int]:
    """(train, test) indices into `variants` and how many were left out (position splits only)."""
    rng = np.random.default_rng(seed)
    if how == "random":
        order = rng.permutation(len(variants))
        n_test = min(max(1, round(fraction * len(variants))), len(variants) - 1)
        return sorted(order[n_test:].tolist()), sorted(order[:n_test].tolist()), 0
    sites = [{p for p, _, _ in v.substitutions} for v in variants]
    touching: dict[int, list[int]] = {}
    for j, where in enumerate(sites):
        for p in where:
            touching.setdefault(p, []).append(j)
    remaining, held, covered = [len(w) for w in sites], set(), 0
    for p in rng.permutation(sorted(touching)).tolist():
        if covered >= fraction * len(variants):
            break
        held.add(p)
        for j in touching[p]:
            remaining[j] -= 1
            covered += remaining[j] == 0
    sides = [{q in held for q in where} for where in sites]
    train = [j for j, side in enumerate(sides) if side == {False}]
    test = [j for j, side in enumerate(sides) if side == {True}]
    if not train or not test:
        raise ConfigError(f"--split position found no split of {len(touching)} positions with both "
                          f"sides non-empty")
    return train, test, len(variants) - len(train) - len(test)


def run_supervised_fitness(checkpoint: str | Path, dms: str | Path, out_dir: str | Path,
                           config: SupervisedFitnessConfig | None = None,
                           wild_type: str | None = None, msa: str | Path | None = None
                           ) -> SupervisedFitnessResult:
    """Split, fine-tune, test, and score the same test variants zero-shot; see the module doc."""
    config, out_dir = config or SupervisedFitnessConfig(), Path(out_dir)
    if (out_dir / "summary.json").exists():
        raise ConfigError(f"{out_dir} already holds a supervised fitness run; choose a new --out")
    check_output_dir(out_dir, "--out")
    family, wild_type = _wild_type(wild_type, msa)
    zero_shot = config.zero_shot and _can_score_zero_shot(checkpoint)
    assay = read_assay(dms, config.score_column)
    variants = [check_mutant(m, wild_type, config.first_position) for m in assay.mutants]
    usable = [j for j, (v, y) in enumerate(zip(variants, assay.scores or []))
              if v.status == "ok" and not math.isnan(y)]
    if len(usable) < 10:
        raise ConfigError(f"{dms}: {len(usable)} measured substitutions fit the wild type; a "
                          f"supervised split needs at least 10 (check --wt and --first-position)")
    kept = [variants[j] for j in usable]
    train, test, dropped = split_variants(kept, config.split, config.test_fraction, config.finetune.seed)
    scores = [assay.scores[j] for j in usable]
    for part, rows in (("train", train), ("test", test)):
        _write_variants(out_dir / "data" / f"{part}.csv", [kept[j] for j in rows],
                        [scores[j] for j in rows], wild_type)
    print(f"bioxlstm: {config.split} split of {len(kept)} measured substitutions: {len(train)} train, "
          f"{len(test)} test" + (f", {dropped} spanning both sides left out" if dropped else ""),
          file=sys.stderr)
    result = finetune(out_dir / "data" / "train.csv", out_dir / "finetune",
                      dataclasses.replace(config.finetune, task="regression"),
                      test=out_dir / "data" / "test.csv", checkpoint=checkpoint,
                      columns=Columns("sequence", id="mutant", targets=("fitness",)))
    rows = [("xLSTM supervised", result.metrics)]
    if result.baseline is not None:
        rows.append((result.baseline["method"], result.baseline["test"]))
    if zero_shot:
        rows.append(("xLSTM zero-shot (FIM)", _zero_shot(checkpoint, wild_type, [kept[j] for j in test],
                                                         [scores[j] for j in test], family, config,
                                                         out_dir / "zero_shot.csv")))
    counts = {"measured": len(kept), "train": len(train), "test": len(test), "left_out": dropped}
    summary = {name: metrics.get("spearman", math.nan) for name, metrics in rows}
    write_json(out_dir / "summary.json", {"spearman": summary, "counts": counts, "split": config.split,
                                          "config": dataclasses.asdict(config), "dms": str(dms),
                                          "checkpoint": str(checkpoint), "versions": versions()})
    return SupervisedFitnessResult(summary, counts, metrics_table("regression", rows), out_dir)


def _wild_type(wild_type: str | None, msa: str | Path | None) -> tuple[Any, str]:
    """The family (or None) and the wild-type sequence: a sequence, a FASTA file's first record, or
    the family's first record."""
    from bioxlstm.data.fasta import read_fasta
    from bioxlstm.data.msa import read_family

    family = read_family(msa) if msa is not None else None
    if wild_type is not None and Path(wild_type).is_file():
        wild_type = next(iter(read_fasta(wild_type)))[1]
    if wild_type is None:
        if family is None:
            raise ConfigError("give the wild-type sequence (--wt) or a family whose first record is "
                              "the wild type (--msa)")
        wild_type = family.sequences[0]
    return family, wild_type.strip().upper()


def _can_score_zero_shot(checkpoint: str | Path) -> bool:
    """Whether the checkpoint can give the zero-shot FIM score (a protein LM with rope); says why not."""
    config = load_config(checkpoint)
    if (config.alphabet or "").lower() != "protein":
        raise ConfigError(f"{checkpoint} is a {config.alphabet} model; supervised fitness needs a "
                          f"protein model")
    if not config.rope:
        print("bioxlstm: no zero-shot score: the model has no rope positions for the FIM query "
              "(--no-zero-shot to silence)", file=sys.stderr)
        return False
    require_lm_head(checkpoint, "a zero-shot fitness score (--no-zero-shot to skip it)")
    return True


def _write_variants(path: Path, variants: list[Variant], scores: list[float], wild_type: str) -> None:
    """mutant, sequence (the wild type with the substitutions), fitness."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def sequence(v: Variant) -> str:
        """The wild type with the variant's substitutions."""
        residues = list(wild_type)
        for p, _, mt in v.substitutions:
            residues[p] = mt
        return "".join(residues)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["mutant", "sequence", "fitness"])
            out.writerows([v.mutant, sequence(v), repr(y)] for v, y in zip(variants, scores))

    atomic_write(path, write)


def _zero_shot(checkpoint: str | Path, wild_type: str, variants: list[Variant], scores: list[float],
               family: Any, config: SupervisedFitnessConfig, path: Path) -> dict[str, float]:
    """Spearman of the `fitness` FIM score with the measured scores of the test variants."""
    from bioxlstm.devices import resolve_device
    from bioxlstm.model import XLSTMLanguageModel
    from bioxlstm.tasks.fitness import FitnessConfig, score_assay, write_scores

    fitness = FitnessConfig(num_homologs=config.num_homologs if family is not None else 0,
                            replicates=config.replicates, identity=config.identity,
                            first_position=1, seed=config.finetune.seed,
                            device=config.finetune.device, progress=config.finetune.progress)
    model = XLSTMLanguageModel.from_pretrained(checkpoint).to(resolve_device(fitness.device)).eval()
    mutants = [":".join(f"{wt}{p + 1}{mt}" for p, wt, mt in v.substitutions) for v in variants]
    result = score_assay(model, wild_type, mutants, family, fitness, scores)
    write_scores(result, path)
    return {"spearman": spearman(np.array(result.scores), np.array(scores))}
