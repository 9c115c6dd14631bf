"""Standard metrics of generated molecules (RDKit, fcd_torch): validity, uniqueness, novelty,
scaffolds, internal diversity, Frechet ChemNet Distance, and property distributions.

Definitions (as in MOSES / the Chem-xLSTM evaluation, with the choices stated):
- validity: share of samples RDKit parses (an empty sample is invalid);
- uniqueness: distinct canonical SMILES among the valid samples / valid samples;
- novelty: share of the distinct valid molecules whose canonical SMILES is not in a set (the
  training set; the official code also reports it against the reference set);
- scaffolds: distinct Bemis-Murcko scaffolds among the valid samples (acyclic molecules have none);
- internal diversity: 1 - mean Tanimoto similarity of Morgan fingerprints (radius 2, 1024 bits)
  over all pairs i < j of valid samples (a seeded subset of `max_pairs_molecules` when larger);
- FCD: Frechet distance of ChemNet activations of the valid samples and the reference molecules.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bioxlstm.data.smiles import parse_molecule
from bioxlstm.extras import require
from bioxlstm.molecule_cache import cached

PROPERTIES = ("molecular_weight", "logp", "qed")
FINGERPRINT_RADIUS, FINGERPRINT_BITS = 2, 1024


def canonical(smiles: str) -> str | None:
    """RDKit's canonical SMILES of a string, or None when it does not parse."""
    from rdkit import Chem

    mol = parse_molecule(smiles)
    return None if mol is None else Chem.MolToSmiles(mol)


def canonical_set(smiles: Iterable[str]) -> set[str]:
    """Canonical SMILES of the valid strings of a collection (invalid ones are left out)."""
    return {c for s in smiles if (c := canonical(s)) is not None}


def scaffold(mol: Any) -> str | None:
    """Canonical SMILES of the Bemis-Murcko scaffold of an RDKit molecule; None when it is acyclic."""
    from rdkit import Chem
    from rdkit.Chem.Scaffolds import MurckoScaffold

    core = Chem.MolToSmiles(MurckoScaffold.GetScaffoldForMol(mol))
    return core or None


def fingerprints(mols: Sequence[Any]) -> list[Any]:
    """Morgan bit vectors (radius 2, 1024 bits) of RDKit molecules."""
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=FINGERPRINT_RADIUS, fpSize=FINGERPRINT_BITS)
    return [gen.GetFingerprint(m) for m in mols]


def internal_diversity(mols: Sequence[Any], max_molecules: int = 5000, seed: int = 0) -> float | None:
    """1 - mean Tanimoto similarity over all pairs i < j (None for fewer than two molecules)."""
    from rdkit import DataStructs

    if len(mols) < 2:
        return None
    if len(mols) > max_molecules:
        pick = np.random.default_rng(seed).choice(len(mols), max_molecules, replace=False)
        mols = [mols[j] for j in sorted(pick)]
    fps = fingerprints(mols)
    total = sum(sum(DataStructs.BulkTanimotoSimilarity(fps[i], fps[i + 1:])) for i in range(len(fps) - 1))
    pairs = len(fps) * (len(fps) - 1) / 2
    return 1.0 - total / pairs


def frechet_chemnet_distance(generated: Sequence[str], reference: Sequence[str],
                             device: str = "cpu",
                             reference_stats: dict[str, np.ndarray] | None = None) -> float | None:
    """FCD between two sets of valid SMILES with the ChemNet shipped in fcd_torch (no download).

    `reference_stats` (mu, sigma of the reference's activations, see reference_statistics) stand
    in for the reference. None when either set has fewer than two molecules.
    """
    if len(generated) < 2 or (reference_stats is None and len(reference) < 2):
        return None
    fcd = require("fcd_torch", "chem", "the Frechet ChemNet Distance").FCD(device=device, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pref = reference_stats if reference_stats is not None else fcd.precalc(list(reference))
        return float(fcd.metric(pref, fcd.precalc(list(generated))))


def reference_statistics(reference: Sequence[str], fcd_device: str = "cpu",
                         note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """What the metrics need of a reference set, cached by its content: the canonical SMILES of its
    valid molecules, ChemNet's mean and covariance (FCD) and the property arrays."""
    def compute() -> dict[str, Any]:
        mols = [(s, m) for s in reference if (m := parse_molecule(s)) is not None]
        stats: dict[str, Any] = {"valid": len(mols),
                                 "canonical": np.array(sorted(canonical_set(s for s, _ in mols)))}
        stats.update(properties([m for _, m in mols]))
        if len(mols) >= 2:
            fcd = require("fcd_torch", "chem", "the Frechet ChemNet Distance").FCD(device=fcd_device,
                                                                                 n_jobs=1)
            with warnings.catch_warnings():  # fcd_torch calls NumPy's deprecated row_stack
                warnings.simplefilter("ignore")
                stats.update(fcd.precalc([s for s, _ in mols]))
        return stats

    return cached(reference, "reference", compute, note)


def train_statistics(train: Sequence[str], note: Callable[[str], None] | None = None) -> set[str]:
    """The canonical SMILES of a training set (for novelty), cached by its content."""
    stats = cached(train, "train", lambda: {"canonical": np.array(sorted(canonical_set(train)))}, note)
    return set(stats["canonical"].tolist())


def properties(mols: Sequence[Any]) -> dict[str, np.ndarray]:
    """Molecular weight, Crippen logP and QED of each RDKit molecule."""
    from rdkit.Chem import QED, Crippen, Descriptors

    return {"molecular_weight": np.array([Descriptors.MolWt(m) for m in mols]),
            "logp": np.array([Crippen.MolLogP(m) for m in mols]),
            "qed": np.array([QED.qed(m) for m in mols])}


def molecule_metrics(
    generated: Sequence[str],
    reference: Sequence[str] | None = None,
    train: Sequence[str] | None = None,
    fcd_device: str = "cpu",
    max_diversity_molecules: int = 5000,
    seed: int = 0,
    note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """All metrics of `generated` (invalid strings included) as a flat JSON-ready dict.

    Novelty against the training set needs `train`; FCD and reference novelty need `reference`.
    Statistics of `reference` and `train` are cached by content (bioxlstm.molecule_cache);
    `note` hears a line for each slow phase.
    """
    mols = [parse_molecule(s) for s in generated]
    valid = [(s, m) for s, m in zip(generated, mols) if m is not None]
    from rdkit import Chem

    unique = {Chem.MolToSmiles(m) for _, m in valid}
    scaffolds = {sc for _, m in valid if (sc := scaffold(m)) is not None}
    n, n_valid = len(generated), len(valid)
    result: dict[str, Any] = {
        "samples": n, "valid": n_valid, "validity": n_valid / n if n else 0.0,
        "unique": len(unique), "uniqueness": len(unique) / n_valid if n_valid else 0.0,
        "unique_scaffolds": len(scaffolds),
        "internal_diversity": internal_diversity([m for _, m in valid], max_diversity_molecules, seed),
    }
    if train is not None:
        known = train_statistics(train, note)
        result["novel_train"] = len(unique - known)
        result["novelty_train"] = len(unique - known) / len(unique) if unique else 0.0
    if reference is not None:
        stats = reference_statistics(reference, fcd_device, note)
        known = set(stats["canonical"].tolist())
        result["reference_valid"] = int(stats["valid"])
        result["novel_reference"] = len(unique - known)
        result["novelty_reference"] = len(unique - known) / len(unique) if unique else 0.0
        moments = {k: stats[k] for k in ("mu", "sigma") if k in stats}
        result["fcd"] = frechet_chemnet_distance([s for s, _ in valid], [], fcd_device,
                                                 moments) if moments else None
    return result


def plot_properties(generated: dict[str, np.ndarray], reference: dict[str, np.ndarray] | None,
                    path: str | Path, labels: tuple[str, str] = ("generated", "reference")) -> Path:
    """Histograms (densities) of each property, generated against reference, saved as an image."""
    matplotlib = require("matplotlib", "plot", "the property plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PROPERTIES), figsize=(4 * len(PROPERTIES), 3.2))
    for ax, name in zip(axes, PROPERTIES):
        sets = [(labels[0], generated[name])]
        if reference is not None:
            sets.append((labels[1], reference[name]))
        values = np.concatenate([v for _, v in sets])
        spread = values.size and values.max() > values.min()
        bins = np.linspace(values.min(), values.max(), 40) if spread else 10
        for label, v in sets:
            ax.hist(v, bins=bins, density=len(v) > 0, alpha=0.5, label=f"{label} (n={len(v):,})")
        ax.set_xlabel(name.replace("_", " "))
        ax.set_yticks([])
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
