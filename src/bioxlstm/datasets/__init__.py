"""The small real data sets that ship with bioxlstm, by name (in the spirit of sklearn.datasets).

`path(name)` gives a file's location inside the installed package, `list()` every entry with what it
is, its source and license; `bioxlstm datasets` prints them. The files and their PROVENANCE.md live
in `bioxlstm/datasets/files/{dna,protein,chem}/`. Nothing is downloaded.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from pathlib import Path

from bioxlstm.errors import BioXLSTMError

FILES = Path(__file__).resolve().parent / "files"


class UnknownDatasetError(BioXLSTMError, LookupError):
    """No bundled data set has that name."""


@dataclass(frozen=True)
class Dataset:
    """One bundled file (or folder) with what it holds, where it came from and its license."""

    name: str
    relative: str
    description: str
    license: str

    @property
    def path(self) -> Path:
        return FILES / self.relative

    @property
    def provenance(self) -> Path:
        """The PROVENANCE.md that says exactly where the file came from and how it was made."""
        return FILES / self.relative.split("/")[0] / "PROVENANCE.md"


_ENTRIES = (
    Dataset("phage_lambda", "dna/phage_lambda_NC_001416.fa.gz",
            "phage lambda genome (RefSeq NC_001416.1), 48,502 bp, one FASTA record",
            "public RefSeq record"),
    Dataset("human_demo_genome", "dna/human/human_demo_genome.fa.bgz",
            "2.98 Mb of human DNA: a GRCh38 chr22 window and 16 INSDC records, bgzip with .fai/.gzi",
            "MIT (Kipoi window); INSDC records unrestricted"),
    Dataset("human_demo_intervals", "dna/human/human_demo_intervals.bed",
            "train/valid/test intervals over human_demo_genome (chr22 window held out)",
            "written for bioxlstm (Apache-2.0)"),
    Dataset("human_nontata_promoters", "dna/human/human_nontata_promoters_test.csv.gz",
            "Genomic Benchmarks human_nontata_promoters test split, 9,034 x 251 bp, sequence,label",
            "Apache-2.0 (Gresova et al. 2023)"),
    Dataset("promoter_core", "dna/human/promoter_core_4000.csv",
            "4,000 human 70 bp sequences, core promoter or not (DNABERT prom-core)",
            "Apache-2.0"),
    Dataset("dna_promoter_suite", "dna/suite",
            "a two-task suite (a folder) for `bioxlstm benchmark`: human_nontata_promoters (600 train / "
            "400 test x 251 bp) and promoter_core (1,200 / 400 x 70 bp), TASK/train.csv.gz + test.csv.gz",
            "Apache-2.0 (Gresova et al. 2023; DNABERT)"),
    Dataset("protein_families", "protein/families",
            "eight protein families as a3m alignments (a folder), for --msa-dir and --msa",
            "MIT (esm) / Apache-2.0 (Prot-xLSTM, ProtMamba); OpenProteinSet CC BY 4.0"),
    Dataset("pab1_dms", "protein/pab1/PABP_YEAST_Fields2013-singles.csv",
            "Pab1 RRM2 deep mutational scan, 1,188 single substitutions (Melamed et al. 2013)",
            "MIT (DeepSequence copy)"),
    Dataset("pab1_wt", "protein/pab1/PABP_YEAST_wt.fasta", "Pab1 residues 126-200, the wild type",
            "MIT (DeepSequence copy)"),
    Dataset("pab1_family", "protein/pab1/RRM_1_PF00076_seed.sto.gz",
            "Pfam RRM_1 seed alignment (PF00076, 79 domains, Stockholm)", "CC0 (Pfam)"),
    Dataset("tem1_dms", "protein/tem1/BLAT_ECOLX_Ranganathan2015.csv",
            "TEM-1 beta-lactamase deep mutational scan, 4,996 rows (Stiffler et al. 2015)",
            "MIT (esm copy)"),
    Dataset("tem1_wt", "protein/tem1/BLAT_ECOLX_wt.fasta", "TEM-1 residues 24-286, the wild type",
            "MIT (esm copy)"),
    Dataset("chembl_train_10k", "chem/chembl_train_10k.smi.gz",
            "10,000 canonical ChEMBL v31 SMILES (training sample)", "CC BY-SA 3.0 (ChEMBL)"),
    Dataset("chembl_valid_2k", "chem/chembl_valid_2k.smi.gz",
            "2,000 canonical ChEMBL v31 SMILES (validation sample)", "CC BY-SA 3.0 (ChEMBL)"),
    Dataset("icst_domains_50", "chem/icst_domains_50.txt.gz",
            "50 molecular domains, one a line, molecules joined by '.' (Chem-xLSTM held-out domains)",
            "mixed; ChEMBL-derived parts CC BY-SA (see PROVENANCE.md)"),
)
DATASETS = {d.name: d for d in _ENTRIES}


def list() -> builtins.list[Dataset]:
    """Every bundled data set (named `list` as in sklearn-style data modules)."""
    return builtins.list(_ENTRIES)


def get(name: str) -> Dataset:
    """The bundled data set called `name`; UnknownDatasetError lists the names."""
    if name not in DATASETS:
        raise UnknownDatasetError(f"no bundled data set {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def path(name: str) -> Path:
    """Where the bundled data set `name` is on disk (a file, or a folder of files)."""
    return get(name).path
