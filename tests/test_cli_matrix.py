"""Every command that reads a checkpoint x every alphabet's checkpoint x every option: the option
either works (changing the output where it should, leaving it equal where it is a speed knob) or
the command stops with exit status 2 and one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bioxlstm import XLSTMLanguageModel, datasets, preset
from bioxlstm.cli import main
from bioxlstm.smiles import SmilesTokenizer

WT = "MKTAYIAKQRQISFVKSH"
MOLS = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "CCCl", "OCCO", "c1ccncc1", "CC(C)O", "C#N", "CBr"]
CHANGES, SAME, REFUSED = "changes", "same", "refused"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("matrix")
    torch.manual_seed(0)
    XLSTMLanguageModel(preset("tiny-mlstm")).save_pretrained(root / "dna")
    XLSTMLanguageModel(preset("tiny-prot-xlstm")).save_pretrained(root / "protein")
    tokenizer = SmilesTokenizer.build(MOLS)
    XLSTMLanguageModel(preset("tiny-chem-xlstm", vocab_size=len(tokenizer))).save_pretrained(root / "smiles")
    tokenizer.save(root / "smiles")
    (root / "dna.fa").write_text(">a\n" + "ACGTTGCAAC" * 30 + "\n>b\n" + "GGCATTAC" * 20 + "\n")
    (root / "protein.fa").write_text(f">a\n{WT}\n>b\n{WT[::-1]}\n")
    members = ["MKTAWIAKQRQLSFVKSH", "MKTAWIAKQRQLSFVKSA", "MKTAWIAKQRQLSFVRSA", "MRTAYIAKQRQISFVKSA",
               "LRSGYVAEQRNISWVKSA", "LRSGYVAEQRNISWVRTA"]
    (root / "fam.a3m").write_text(f">wt\n{WT}\n" + "".join(f">h{j}\n{m}\n" for j, m in enumerate(members)))
    (root / "dms.csv").write_text("mutant,DMS_score\nK2A,0.1\nS13W,-0.5\nT3V,0.3\nA4G,-0.2\n")
    (root / "ctx.smi").write_text("CCO\nCCN\nc1ccccc1\n")
    from bioxlstm.data.genome import Genome

    chrom, genome = "chr22_32000001_32300000", Genome(datasets.path("human_demo_genome"))
    rows = [f"{chrom}\t{pos}\t{genome.fetch(chrom, pos - 1, pos)}\t{alt}"
            for pos, alt in ((1001, "A"), (2002, "C"))]
    (root / "variants.tsv").write_text("chrom\tpos\tref\talt\n" + "\n".join(rows) + "\n")
    return {p.name: p for p in root.iterdir()}


def _run(capsys, argv: list[str], out: Path | None = None) -> tuple[int, str, str]:
    """Exit status, what the command produced (its --out file, else standard output), stderr."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse refusals
        code = exit_.code
    captured = capsys.readouterr()
    produced = out.read_text() if out is not None and out.exists() else captured.out
    return code, produced, captured.err


GENERATE = {  # option -> expectation for (dna, protein, smiles) checkpoints
    ("--prompt", "ACG"): (CHANGES, CHANGES, REFUSED),
    ("--prompt", "QQ"): (REFUSED, CHANGES, REFUSED),  # Q is no DNA letter
    ("--num", "2"): (CHANGES, CHANGES, CHANGES),
    ("--num-samples", "2"): (CHANGES, CHANGES, CHANGES),
    ("--length", "5"): (CHANGES, CHANGES, CHANGES),
    ("--temperature", "0"): (CHANGES, CHANGES, CHANGES),
    ("--top-k", "1"): (CHANGES, CHANGES, CHANGES),
    ("--top-p", "0.05"): (CHANGES, CHANGES, CHANGES),
    ("--seed", "7"): (CHANGES, CHANGES, CHANGES),
    ("--batch-size", "1"): (REFUSED, REFUSED, CHANGES),
    ("--context-smiles", "CTX"): (REFUSED, REFUSED, CHANGES),
    ("--num-context", "1"): (REFUSED, REFUSED, REFUSED),  # SMILES: needs --context-smiles
    ("--max-residues", "4"): (REFUSED, REFUSED, REFUSED),  # needs --msa
    ("--msa", "FAM"): (REFUSED, CHANGES, REFUSED),
    ("--device", "cpu"): (SAME, SAME, SAME),
}


@pytest.mark.parametrize("alphabet", ["dna", "protein", "smiles"])
@pytest.mark.parametrize("option", list(GENERATE), ids=lambda o: " ".join(o))
def test_generate_options(capsys, files, tmp_path, alphabet, option):
    expected = GENERATE[option][("dna", "protein", "smiles").index(alphabet)]
    value = {"CTX": str(files["ctx.smi"]), "FAM": str(files["fam.a3m"])}.get(option[1], option[1])
    base = ["generate", str(files[alphabet]), "--num", "3", "--device", "cpu"]
    if option[0] == "--max-residues" and alphabet == "protein":
        base += ["--msa", str(files["fam.a3m"])]
        expected = CHANGES
    elif option[0] not in ("--msa", "--length"):
        base += ["--length", "12"]
    code0, out0, err0 = _run(capsys, base)
    assert code0 == 0, err0
    code, out, err = _run(capsys, [*base, option[0], value])
    _check(expected, option[0], (code0, out0), (code, out, err))
    if expected != REFUSED:  # --out writes what standard output would show
        path = tmp_path / "out.txt"
        assert _run(capsys, [*base, option[0], value, "--out", str(path)], path)[1] == out


SCORE = {
    ("--window", "64"): (CHANGES, REFUSED, REFUSED),  # variants need a DNA model
    ("--batch-size", "1"): (SAME, SAME, REFUSED),
    ("--chunk-tokens", "16"): (SAME, SAME, REFUSED),
    ("--device", "cpu"): (SAME, SAME, REFUSED),
}


@pytest.mark.parametrize("alphabet", ["dna", "protein", "smiles"])
@pytest.mark.parametrize("option", list(SCORE), ids=lambda o: " ".join(o))
def test_score_options(capsys, files, alphabet, option):
    expected = SCORE[option][("dna", "protein", "smiles").index(alphabet)]
    fasta = files["protein.fa" if alphabet == "protein" else "dna.fa"]
    base = ["score", str(files[alphabet]), "--fasta", str(fasta)]
    if option[0] == "--window":
        base = ["score", str(files[alphabet]), "--variants", str(files["variants.tsv"]),
                "--genome", str(datasets.path("human_demo_genome"))]
    if alphabet == "smiles" or (alphabet == "protein" and option[0] == "--window"):
        code, _, err = _run(capsys, [*base, *option])
        assert code == 2 and err.count("\n") == 1 and "smiles model" in err or "DNA model" in err
        return
    code0, out0, err0 = _run(capsys, base)
    assert code0 == 0, err0
    _check(expected, option[0], (code0, out0), _run(capsys, [*base, *option]), atol=1e-3)


EMBED = {("--batch-size", "1"): SAME, ("--chunk-tokens", "16"): SAME, ("--device", "cpu"): SAME}


@pytest.mark.parametrize("alphabet", ["dna", "protein", "smiles"])
@pytest.mark.parametrize("option", list(EMBED), ids=lambda o: " ".join(o))
def test_embed_options(capsys, files, tmp_path, alphabet, option):
    import numpy as np

    fasta = files["protein.fa" if alphabet == "protein" else "dna.fa"]
    base = ["embed", str(files[alphabet]), "--fasta", str(fasta), "--out", str(tmp_path / "a.npy")]
    if alphabet == "smiles":
        code, _, err = _run(capsys, [*base, *option])
        assert code == 2 and "smiles model" in err
        return
    assert _run(capsys, base)[0] == 0, "embedding failed"
    first = np.load(tmp_path / "a.npy")
    other = ["embed", str(files[alphabet]), "--fasta", str(fasta), "--out", str(tmp_path / "b.npy")]
    assert _run(capsys, [*other, *option])[0] == 0
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), first, atol=1e-4)


FITNESS = {
    ("--num-homologs", "2"): CHANGES, ("--replicates", "2"): CHANGES, ("--identity", "0.95"): CHANGES,
    ("--seed", "3"): CHANGES, ("--first-position", "2"): REFUSED, ("--batch-size", "1"): SAME,
    ("--chunk-tokens", "8"): SAME, ("--device", "cpu"): SAME, ("--include-synonymous",): SAME,
}


@pytest.mark.parametrize("alphabet", ["dna", "protein", "smiles"])
@pytest.mark.parametrize("option", list(FITNESS), ids=lambda o: " ".join(o))
def test_fitness_options(capsys, files, tmp_path, alphabet, option):
    out = tmp_path / "scores.csv"
    base = ["fitness", str(files[alphabet]), "--dms", str(files["dms.csv"]), "--msa",
            str(files["fam.a3m"]), "--num-homologs", "1", "--out", str(out), "--device", "cpu"]
    if alphabet != "protein":
        code, _, err = _run(capsys, base)
        assert code == 2 and err.count("\n") == 1 and "protein model" in err
        return
    code0, out0, err0 = _run(capsys, base, out)
    assert code0 == 0, err0
    _check(FITNESS[option], option[0], (code0, out0), _run(capsys, [*base, *option], out), atol=1e-5)


def _check(expected: str, option: str, base: tuple[int, str], run: tuple[int, str, str],
           atol: float = 0.0) -> None:
    code, out, err = run
    if expected == REFUSED:
        assert code == 2, f"{option} should be refused, got exit {code}"
        assert err.count("\n") == 1 and option in err, err
        return
    assert code == 0, err
    if expected == CHANGES:
        assert out != base[1], f"{option} changed nothing"
    elif atol:
        assert _numbers(out) == pytest.approx(_numbers(base[1]), abs=atol)
    else:
        assert out == base[1]


def _numbers(text: str) -> list[float]:
    values = []
    for field in text.replace(",", "\t").split():
        try:
            values.append(float(field))
        except ValueError:
            continue
    return values


FINETUNE = {  # option -> expectation for (dna, protein, smiles) checkpoints, on two-class labels
    ("--rc-conjoin",): (CHANGES, REFUSED, REFUSED),
    ("--adapt", "frozen"): (CHANGES, CHANGES, CHANGES),
    ("--freeze-backbone",): (CHANGES, CHANGES, CHANGES),
    ("--adapt", "lora"): (CHANGES, CHANGES, CHANGES),
    ("--lora-rank", "4"): (REFUSED, REFUSED, REFUSED),  # needs --adapt lora
    ("--lora-alpha", "4"): (REFUSED, REFUSED, REFUSED),
    ("--head", "mlp"): (CHANGES, CHANGES, CHANGES),
    ("--head-hidden", "8"): (REFUSED, REFUSED, REFUSED),  # needs --head mlp
    ("--baseline", "kmer"): (SAME, SAME, REFUSED),  # the default for sequences
    ("--baseline", "onehot"): (CHANGES, CHANGES, REFUSED),
    ("--baseline", "fingerprint"): (REFUSED, REFUSED, SAME),  # the default for SMILES
    ("--baseline", "none"): (CHANGES, CHANGES, CHANGES),
    ("--kmer", "3"): (CHANGES, CHANGES, REFUSED),
    ("--task", "regression"): (CHANGES, CHANGES, CHANGES),
    ("--task", "multilabel"): (CHANGES, CHANGES, CHANGES),
    ("--select", "spearman"): (REFUSED, REFUSED, REFUSED),  # a regression metric
    ("--select", "mcc"): (CHANGES, CHANGES, CHANGES),
    ("--target-column", "label"): (SAME, SAME, SAME),
    ("--label-column", "label"): (SAME, SAME, SAME),
    ("--max-length", "3"): (CHANGES, CHANGES, CHANGES),
    ("--seed", "3"): (CHANGES, CHANGES, CHANGES),
}
_FINETUNE_BASE: dict[str, tuple[int, str]] = {}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> dict[str, Path]:
    """Two-class tables for each alphabet (sequence column 'sequence', or 'smiles')."""
    import numpy as np

    root, rng = tmp_path_factory.mktemp("labelled"), np.random.default_rng(0)
    dna = ["".join(rng.choice(list("ACGT"), size=20)) for _ in range(40)]
    protein = ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=15)) for _ in range(40)]
    tables = {"dna": ("sequence", dna), "protein": ("sequence", protein), "smiles": ("smiles", MOLS * 8)}
    paths = {}
    for name, (column, rows) in tables.items():
        paths[name] = root / f"{name}.csv"
        paths[name].write_text(f"{column},label\n" + "".join(f"{r},{j % 2}\n" for j, r in enumerate(rows)))
    return paths


@pytest.mark.parametrize("alphabet", ["dna", "protein", "smiles"])
@pytest.mark.parametrize("option", list(FINETUNE), ids=lambda o: " ".join(o))
def test_finetune_options(capsys, files, labelled, tmp_path, monkeypatch, alphabet, option):
    """Each run in its own directory with --out out, so standard output can be compared."""
    expected = FINETUNE[option][("dna", "protein", "smiles").index(alphabet)]
    base = ["finetune", "--checkpoint", str(files[alphabet]), "--train", str(labelled[alphabet]),
            "--out", "out", "--epochs", "1", "--batch-size", "8", "--device", "cpu"]
    if alphabet not in _FINETUNE_BASE:
        code0, out0, err0 = _run_finetune(capsys, monkeypatch, tmp_path / "base", base)
        assert code0 == 0, err0
        _FINETUNE_BASE[alphabet] = (code0, out0)
    run = _run_finetune(capsys, monkeypatch, tmp_path / "run", [*base, *option])
    _check(expected, option[0], _FINETUNE_BASE[alphabet], run)


def _run_finetune(capsys, monkeypatch, where: Path, argv: list[str]) -> tuple[int, str, str]:
    """_run in `where`; what it produced is standard output and the predictions."""
    where.mkdir()
    monkeypatch.chdir(where)
    code, out, err = _run(capsys, argv)
    predictions = where / "out" / "predictions.csv"
    return code, out + (predictions.read_text() if predictions.exists() else ""), err
