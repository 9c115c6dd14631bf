"""Protein families: readers, FIM layout and position ids, family contexts, resumable source."""

import gzip

import pytest
import torch

from bioxlstm import XLSTMLanguageModel, datasets, preset
from bioxlstm.alphabets import PROTEIN
from bioxlstm.data.families import (
    FamilyContexts,
    build_context,
    collate,
    evaluate_families,
    family_eval_samples,
)
from bioxlstm.data.fim import CLS, EOS, MASKS, FIMConfig, FIMError, fim_sequence, sample_spans, unfim
from bioxlstm.data.msa import MSAError, family_paths, read_family, read_msa_dir
from bioxlstm.tasks.pretrain_msa import split_families

DATA = datasets.path("protein_families").parent


@pytest.fixture
def tiny_protein_model():
    torch.manual_seed(0)
    return XLSTMLanguageModel(preset("tiny-mlstm", alphabet="protein", vocab_size=38, rope=True)).eval()
A3M = ">query\nMK-LV\n>hit1 desc\nMKaaDLV\n>hit2\n-KRL-\n"


def ids(text):
    return PROTEIN.encode(text)


def test_alphabet_matches_spec():
    assert len(PROTEIN) == 38
    assert [PROTEIN.id(t) for t in ("<cls>", "<pad>", "<eos>", "<unk>", "L", "C", "X", "O", ".",
                                    "-", "<null_1>", "<mask>", "<mask-1>", "<mask-5>")] == \
        [0, 1, 2, 3, 4, 23, 24, 28, 29, 30, 31, 32, 33, 37]


def test_a3m_reader_removes_gaps_and_uppercases_insertions(tmp_path):
    path = tmp_path / "fam.a3m"
    path.write_text(A3M)
    family = read_family(path)
    assert family.names == ["query", "hit1", "hit2"]
    assert family.sequences == ["MKLV", "MKAADLV", "KRL"]
    assert family.aligned == ["MK-LV", "MKDLV", "-KRL-"]


def test_gzip_a3m_and_stockholm_and_aligned_fasta(tmp_path):
    gz = tmp_path / "fam.a3m.gz"
    gz.write_bytes(gzip.compress(A3M.encode()))
    assert read_family(gz).sequences[1] == "MKAADLV"
    sto = tmp_path / "fam.sto"
    sto.write_text("# STOCKHOLM 1.0\nseqA  MK.LV-\nseqB  MKaLVW\n//\n")
    family = read_family(sto)
    assert family.sequences == ["MKLV", "MKALVW"] and family.aligned == ["MK-LV-", "MKALVW"]
    afa = tmp_path / "fam.fasta"
    afa.write_text(">a\nMK-LV\n>b\nMKALV\n")
    assert read_family(afa).sequences == ["MKLV", "MKALV"]


@pytest.mark.parametrize("text, message", [
    ("", "no records"),
    ("MKLV\n", "before the first"),
    (">a\nMKLV\n>b\n", "has no sequence"),
    (">a\nMKLV\n>b\nMKL\n", "record 'b' has 3 match columns"),
    (">a\nMK1V\n", "record 'a', column 3: character '1'"),
])
def test_bad_a3m_gives_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.a3m"
    path.write_text(text)
    with pytest.raises(MSAError, match=message):
        read_family(path)


def test_real_families_read():
    families = read_msa_dir(DATA / "families")
    assert len(families) == 8
    sizes = {f.name: len(f) for f in families}
    assert sizes["UniRef50_E9K9Y4"] == 17 and sizes["A0A1C5UJ41"] == 1776
    rrm = read_family(DATA / "pab1" / "RRM_1_PF00076_seed.sto.gz")
    assert len(rrm) == 79 and len({len(r) for r in rrm.aligned}) == 1


def test_openproteinset_layout_joins_files_of_a_subdirectory(tmp_path):
    (tmp_path / "famA" / "a3m").mkdir(parents=True)
    (tmp_path / "famA" / "a3m" / "uniclust30.a3m").write_text(A3M)
    (tmp_path / "famA" / "a3m" / "bfd.a3m").write_text(">x\nMMM\n")
    (tmp_path / "famB.a3m").write_text(">y\nWW\n")
    assert list(family_paths(tmp_path)) == ["famA", "famB"]
    families = read_msa_dir(tmp_path)
    assert len(families[0]) == 4 and families[1].sequences == ["WW"]


def test_fim_layout_and_position_ids_match_spec_worked_example():
    # residues A B C D E F G H (1-based 1..8); spans [1,3) = "BC" and [5,6) = "F"
    residues = ids("ACDEFGHI")
    piece = fim_sequence(residues, [(1, 3), (5, 6)])
    m1, m2 = MASKS[0], MASKS[1]
    A, C, D, E, F, G, H, Ile = residues
    assert piece.tokens == [CLS, A, m1, E, F, m2, H, Ile, EOS, m1, C, D, m2, G]
    assert piece.positions == [0, 1, 2, 4, 5, 6, 7, 8, 0, 2, 2, 3, 6, 6]
    assert piece.fim == [False] * 9 + [False, True, True, False, True]


def test_fim_without_spans_is_cls_plus_residues():
    piece = fim_sequence(ids("MKV"), [])
    assert piece.tokens == [CLS, *ids("MKV")] and piece.positions == [0, 1, 2, 3]


def test_bad_spans_are_refused():
    with pytest.raises(FIMError):
        fim_sequence(ids("MKV"), [(2, 1)])
    with pytest.raises(FIMError):
        fim_sequence(ids("MKVLLLLLLLLLLL"), [(j, j + 1) for j in range(0, 12, 2)])


def test_unfim_round_trip_of_family_contexts():
    family = [ids(s) for s in ("MKTAYIAKQR", "MKVLAAGG", "GAVLIMKRT", "W", "MMMMKKKKAAAA")]
    for seed in range(20):
        sample = build_context(family, 10_000, FIMConfig(rate=2.0), torch.Generator().manual_seed(seed))
        restored = unfim(sample.tokens.tolist())
        order = sample.member  # member index within the sample, not the family
        assert len(restored) == int(order.max()) + 1 == len(family)
        assert sorted(map(tuple, restored)) == sorted(map(tuple, family))


def test_sample_spans_respect_the_cap_and_sequence():
    gen = torch.Generator().manual_seed(0)
    counts = [len(sample_spans(200, FIMConfig(rate=1.0), gen)) for _ in range(2000)]
    assert max(counts) <= 5 and 0.9 < sum(counts) / len(counts) < 1.1
    assert sample_spans(1, FIMConfig(rate=5.0), gen) in ([], [(0, 1)])


def test_context_respects_max_tokens_and_crops_a_long_first_member():
    family = [ids("M" * 50), ids("K" * 50)]
    sample = build_context(family, 60, FIMConfig(rate=0.0), torch.Generator().manual_seed(0))
    assert len(sample) == 51
    cropped = build_context([ids("M" * 100)], 30, FIMConfig(), torch.Generator().manual_seed(0))
    assert cropped.tokens.tolist() == [CLS] + ids("M" * 29)


def test_collate_pads_with_ignored_labels():
    a = build_context([ids("MKV")], 100, FIMConfig(rate=0.0), torch.Generator())
    b = build_context([ids("MKVLA")], 100, FIMConfig(rate=0.0), torch.Generator())
    batch = collate([a, b])
    assert batch["input_ids"].shape == (2, 6)
    assert batch["labels"][0].tolist() == [CLS, *ids("MKV"), -100, -100]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 0, 0]


def test_family_source_resumes_exactly():
    families = [[ids("MKTAYIAKQR"), ids("MKVLAAGG")], [ids("GAVLIMKRT"), ids("WWWW")]]
    source = FamilyContexts(families, 40, 2, seed=3)
    source.next_batch()
    state = source.state_dict()
    expected = [source.next_batch() for _ in range(3)]
    resumed = FamilyContexts(families, 40, 2, seed=99)
    resumed.load_state_dict(state)
    for want in expected:
        got = resumed.next_batch()
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_evaluate_families_splits_last_member_and_fim_tokens(tiny_protein_model):
    families = [[ids("MKTAYIAKQR"), ids("MKVLAAGG"), ids("GAVLIMKRT")]]
    samples = family_eval_samples(families, 200, FIMConfig(rate=3.0), seed=1)
    metrics = evaluate_families(tiny_protein_model, samples)
    sample = samples[0]
    with torch.no_grad():
        logits = tiny_protein_model(sample.tokens[None], position_ids=sample.positions[None]).logits[0]
    nll = torch.nn.functional.cross_entropy(logits[:-1], sample.tokens[1:], reduction="none")
    assert metrics["valid_loss"] == pytest.approx(float(nll.mean()), rel=1e-5)
    fim = sample.fim[1:]
    assert metrics["valid_loss_fim"] == pytest.approx(float(nll[fim].mean()), rel=1e-5)
    last = (sample.member[1:] == sample.member[-1]) & (sample.tokens[1:] != CLS)
    assert metrics["valid_loss_last"] == pytest.approx(float(nll[last].mean()), rel=1e-5)


def test_family_split_is_whole_families_and_seeded():
    names = [f"fam{j}" for j in range(10)]
    split = split_families(names, 0.2, 0.1, seed=0)
    assert len(split.valid) == 2 and len(split.test) == 1 and len(split.train) == 7
    assert not set(split.valid) & set(split.train) and split == split_families(names, 0.2, 0.1, 0)
    assert len(split_families(names[:3], 0.1, 0.1).train) == 1
    with pytest.raises(Exception, match="cannot be split"):
        split_families(names[:2], 0.1, 0.1)


def test_pretrain_msa_cli_reports_three_perplexities_and_resumes(tmp_path):
    import json

    from bioxlstm.cli import main

    msa_dir = tmp_path / "msas"
    msa_dir.mkdir()
    gen = torch.Generator().manual_seed(0)
    for f in range(4):
        base = "".join("LAGVSERTIDPKQNFYMHWC"[j] for j in torch.randint(0, 20, (30,), generator=gen))
        (msa_dir / f"fam{f}.a3m").write_text("".join(f">m{k}\n{base[k:] + base[:k]}\n" for k in range(6)))
    (tmp_path / "model.yaml").write_text("preset: tiny-mlstm\nalphabet: protein\nvocab_size: 38\n"
                                         "rope: true\n")
    (tmp_path / "train.yaml").write_text("eval_every: 2\neval_batches: 2\nprogress: false\n")
    run = tmp_path / "run"
    args = ["pretrain", "--model-config", str(tmp_path / "model.yaml"), "--train-config",
            str(tmp_path / "train.yaml"), "--msa-dir", str(msa_dir), "--run-dir", str(run),
            "--batch-size", "2", "--seq-len", "120", "--device", "cpu", "--valid-fraction", "0.25",
            "--test-fraction", "0.25", "--fim-rate", "3"]
    assert main([*args, "--steps", "2"]) == 0
    split = json.loads((run / "families.json").read_text())
    assert len(split["train"]) == 2 and len(split["valid"]) == 1 and len(split["test"]) == 1
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"valid_ppl", "valid_ppl_last", "valid_ppl_fim"} <= set(record)
    assert main([*args, "--steps", "4", "--resume"]) == 0
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 4
    no_rope = tmp_path / "norope.yaml"
    no_rope.write_text("preset: tiny-mlstm\nalphabet: protein\nvocab_size: 38\n")
    assert main(["pretrain", "--model-config", str(no_rope), "--msa-dir", str(msa_dir), "--run-dir",
                 str(tmp_path / "run2"), "--steps", "1"]) == 2
