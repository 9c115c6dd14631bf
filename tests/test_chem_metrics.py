"""Molecule metrics against values worked out by hand on small sets; FCD of a set to itself is ~0."""

import json

import pytest

from bioxlstm.cli import main
from bioxlstm.data.smiles import parse_molecule
from bioxlstm.molecule_metrics import (
    fingerprints,
    frechet_chemnet_distance,
    internal_diversity,
    molecule_metrics,
)

GENERATED = ["CCO", "OCC", "c1ccccc1", "C1=CC=CC=C1", "Cc1ccccc1", "xyz", ""]
FEW = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "CCCl", "OCCO", "c1ccncc1", "CC(C)O"]


def test_counts_by_hand():
    m = molecule_metrics(GENERATED, reference=["c1ccccc1", "CC"], train=["OCC", "invalid("])
    assert m["samples"] == 7 and m["valid"] == 5 and m["validity"] == pytest.approx(5 / 7)
    # canonical: CCO (twice), c1ccccc1 (twice: aromatic and Kekule), Cc1ccccc1
    assert m["unique"] == 3 and m["uniqueness"] == pytest.approx(3 / 5)
    assert m["novel_train"] == 2 and m["novelty_train"] == pytest.approx(2 / 3)
    assert m["novel_reference"] == 2 and m["novelty_reference"] == pytest.approx(2 / 3)
    assert m["unique_scaffolds"] == 1  # benzene for both ring molecules; ethanol has none


def test_internal_diversity_by_hand():
    mols = [parse_molecule(s) for s in ("CCO", "CCN", "CCO")]
    bits = [set(fp.GetOnBits()) for fp in fingerprints(mols)]
    t01 = len(bits[0] & bits[1]) / len(bits[0] | bits[1])
    # pairs (0,1), (0,2), (1,2): Tanimoto t01, 1, t01
    assert internal_diversity(mols) == pytest.approx(1 - (2 * t01 + 1) / 3)
    assert internal_diversity(mols[:1]) is None
    assert internal_diversity([mols[0], mols[2]]) == pytest.approx(0.0)


def test_fcd_of_a_set_with_itself_is_zero_and_grows_for_other_sets():
    assert abs(frechet_chemnet_distance(FEW, FEW)) < 1e-3
    assert frechet_chemnet_distance(FEW, ["CCCCCCCCCC", "CCCCCCCCCCCC", "CCCCCCCCO"]) > 1.0
    assert frechet_chemnet_distance(FEW[:1], FEW) is None


def test_cli_writes_json_table_and_plot(tmp_path, capsys):
    gen, ref, train = tmp_path / "gen.smi", tmp_path / "ref.smi", tmp_path / "train.smi"
    gen.write_text("\n".join(GENERATED + FEW) + "\n")
    ref.write_text("SMILES\n" + "\n".join(FEW) + "\n")
    train.write_text("OCC\n")
    out = tmp_path / "eval"
    assert main(["evaluate-molecules", str(gen), "--reference", str(ref), "--train", str(train),
                 "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "validity" in table and "FCD to reference" in table
    data = json.loads((out / "metrics.json").read_text())
    assert data["samples"] == 15 and data["valid"] == 13 and data["fcd"] is not None
    assert (out / "properties.png").stat().st_size > 1000
    empty = tmp_path / "empty.smi"
    empty.write_text("\n")
    assert main(["evaluate-molecules", str(empty)]) == 2
    assert "no SMILES in the file" in capsys.readouterr().err


def test_reference_statistics_are_cached_by_content_and_the_table_counts_valid_molecules(
        tmp_path, capsys):
    from bioxlstm.cli import main

    generated = tmp_path / "gen.smi"
    generated.write_text("CCO\nc1ccccc1\nnot-a-molecule\nCCN\n")
    reference = tmp_path / "ref.smi"
    reference.write_text("CCO\nCCCl\nc1ccncc1\nOCCO\n")
    argv = ["evaluate-molecules", str(generated), "--reference", str(reference)]
    assert main(argv) == 0
    first = capsys.readouterr()
    assert "reference of 4 molecules: computing" in first.err
    assert "valid molecules" in first.out and " 3\n" in first.out.replace("      ", " ")
    assert main(argv) == 0
    second = capsys.readouterr()
    assert "reference of 4 molecules: cached" in second.err and second.out == first.out
    reference.write_text("CCO\nCCCl\nc1ccncc1\nOCCN\n")  # other content, other statistics
    assert main(argv) == 0
    assert "reference of 4 molecules: computing" in capsys.readouterr().err
