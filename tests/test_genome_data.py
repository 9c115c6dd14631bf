"""Genome pretraining data: the genome reader, interval files and genome window batches."""

import functools
import gzip
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from bioxlstm import XLSTMLanguageModel, datasets, preset
from bioxlstm.alphabets import DNA, encode_dna
from bioxlstm.data.fasta import read_fasta
from bioxlstm.data.genome import Genome, GenomeError
from bioxlstm.data.genome_windows import GenomeWindows, WindowConfig, genome_eval_batches
from bioxlstm.data.intervals import (
    Interval,
    IntervalError,
    chromosome_intervals,
    read_intervals,
    select_split,
)
from bioxlstm.data.masking import IGNORE_INDEX, is_base
from bioxlstm.errors import BioXLSTMError, ConfigError
from bioxlstm.strands import reverse_complement
from bioxlstm.train import TrainConfig, Trainer

HUMAN = datasets.path("human_demo_genome").parent
FASTA = HUMAN / "human_demo_genome.fa.bgz"
BED = HUMAN / "human_demo_intervals.bed"
CHR22 = "chr22_32000001_32300000"


def raises_one_line(error, match, fn, *args, **kwargs):
    """fn(*args) raises `error`, a BioXLSTMError whose message is one line matching `match`."""
    with pytest.raises(error, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, BioXLSTMError) and "\n" not in str(info.value)


@pytest.fixture(scope="module")
def genome():
    return Genome(FASTA)


@pytest.fixture(scope="module")
def sequences():
    return dict(read_fasta(FASTA))


@pytest.fixture(scope="module")
def intervals(genome):
    return read_intervals(BED, genome.lengths)


class Recording:
    """A genome that records every region fetched from it."""

    def __init__(self, genome):
        self.genome, self.lengths, self.path, self.calls = genome, genome.lengths, genome.path, []

    def fetch(self, chrom, start, end):
        self.calls.append((chrom, start, end))
        return self.genome.fetch(chrom, start, end)


def split_text(sequences, intervals, split):
    """The bases of a split's intervals joined by '|', to look windows up in."""
    return "|".join(sequences[iv.chrom][iv.start:iv.end] for iv in intervals if iv.split == split)


def write_fasta(path, records, width=60):
    with open(path, "w") as fh:
        for name, seq in records:
            fh.write(f">{name} some description\n")
            fh.write("".join(seq[i:i + width] + "\n" for i in range(0, len(seq), width)))
    return path


# --- the genome reader -------------------------------------------------------------------------

def test_genome_fetch_matches_the_fasta_records(genome, sequences):
    assert genome.lengths == {name: len(seq) for name, seq in sequences.items()}
    for name, seq in sequences.items():
        for start, end in ((0, 1), (0, len(seq)), (len(seq) // 3, len(seq) // 3 + 777)):
            if end <= len(seq):
                assert genome.fetch(name, start, end) == seq[start:end]


def test_genome_uppercases_soft_masked_bases(tmp_path):
    path = write_fasta(tmp_path / "soft.fa", [("c1", "ACGTacgtNNnnACGT" * 5)], width=7)
    g = Genome(path)
    assert g.fetch("c1", 0, 16) == "ACGTACGTNNNNACGT"
    assert encode_dna(g.fetch("c1", 4, 8)).tolist() == DNA.encode("ACGT")


@pytest.mark.parametrize("text,message", [
    ("", "cannot be indexed as FASTA"),
    (">a\n>b\nACGT\n", "record 'a' has no sequence"),
])
def test_genome_refuses_empty_files_and_records(tmp_path, text, message):
    (tmp_path / "bad.fa").write_text(text)
    raises_one_line(GenomeError, message, Genome, tmp_path / "bad.fa")


def test_genome_refuses_missing_and_plain_gzip_files(tmp_path):
    raises_one_line(GenomeError, "no such genome FASTA", Genome, tmp_path / "none.fa")
    with gzip.open(tmp_path / "x.fa.gz", "wt") as fh:
        fh.write(">a\nACGT\n")
    raises_one_line(GenomeError, "gzip-compressed but not bgzip", Genome, tmp_path / "x.fa.gz")


def test_genome_fetch_errors(genome):
    raises_one_line(GenomeError, "no chromosome 'chrZ'", genome.fetch, "chrZ", 0, 10)
    raises_one_line(GenomeError, "outside the chromosome", genome.fetch, CHR22, 299_990, 300_001)
    raises_one_line(GenomeError, "outside the chromosome", genome.fetch, CHR22, 5, 5)


def newer_index(path, lines):
    """Write `lines` as the .fai of path, dated after the FASTA so pyfaidx keeps it."""
    index = Path(f"{path}.fai")
    index.write_text("".join(line + "\n" for line in lines))
    later = time.time() + 60
    os.utime(index, (later, later))


def shifted(lines, row, column, delta):
    fields = [line.split("\t") for line in lines]
    fields[row][column] = str(int(fields[row][column]) + delta)
    return ["\t".join(f) for f in fields]


@pytest.mark.parametrize("row,column,delta", [
    (0, 1, -1), (0, 1, 3), (0, 2, 1), (0, 2, -1), (1, 2, 7), (0, 3, 1), (1, 4, 1), (1, 1, -2),
])
def test_genome_refuses_a_stale_index_that_is_newer_than_the_file(tmp_path, row, column, delta):
    path = write_fasta(tmp_path / "g.fa", [("a", "ACGTTGCA" * 10), ("b", "GGCATT" * 9)], width=20)
    Genome(path)
    good = Path(f"{path}.fai").read_text().splitlines()
    newer_index(path, good)
    assert Genome(path).fetch("b", 0, 6) == "GGCATT"
    newer_index(path, shifted(good, row, column, delta))
    raises_one_line(GenomeError, r"g\.fa\.fai does not match the file .*delete it", Genome, path)


def test_genome_refuses_an_index_of_another_layout_or_garbage(tmp_path):
    records = [("a", "ACGTTGCA" * 10), ("b", "GGCATT" * 9)]
    path = write_fasta(tmp_path / "g.fa", records, width=20)
    Genome(path)
    old = Path(f"{path}.fai").read_text().splitlines()
    write_fasta(path, records, width=30)
    newer_index(path, old)
    raises_one_line(GenomeError, "does not match the file", Genome, path)
    newer_index(path, ["a\tten\t3"])
    raises_one_line(GenomeError, "cannot be indexed as FASTA.*delete it", Genome, path)


def test_genome_refuses_a_stale_index_of_a_bgzip_file(tmp_path, sequences):
    for suffix in ("", ".gzi"):
        shutil.copy(f"{FASTA}{suffix}", tmp_path / f"g.fa.bgz{suffix}")
    path = tmp_path / "g.fa.bgz"
    good = FASTA.with_name(FASTA.name + ".fai").read_text().splitlines()
    newer_index(path, good)
    os.utime(f"{path}.gzi", (time.time() + 60,) * 2)
    assert Genome(path).fetch("V00508.1", 100, 200) == sequences["V00508.1"][100:200]
    newer_index(path, shifted(good, 2, 2, 61))
    raises_one_line(GenomeError, "does not match the file .*'V00508.1'", Genome, path)


# --- interval files ----------------------------------------------------------------------------

def test_bundled_intervals_follow_the_chromosome_split(intervals):
    assert [len(select_split(intervals, s)) for s in ("train", "valid", "test")] == [51, 3, 2]
    assert intervals[0] == Interval(CHR22, 0, 65_536, "valid")
    assert {iv.chrom for iv in intervals if iv.split != "train"} == {CHR22}


def test_intervals_tolerate_headers_blank_lines_extra_columns_and_gzip(tmp_path, genome):
    text = ("track name=x\nbrowser position chr1\n# comment\n\n"
            "V00508.1\t0\t100\ttrain\textra\t1\n  \nV00508.1 200 300 valid\n")
    (tmp_path / "a.bed").write_text(text)
    with gzip.open(tmp_path / "a.bed.gz", "wt") as fh:
        fh.write(text)
    expected = [Interval("V00508.1", 0, 100, "train"), Interval("V00508.1", 200, 300, "valid")]
    for name in ("a.bed", "a.bed.gz"):
        assert read_intervals(tmp_path / name, genome.lengths) == expected


@pytest.mark.parametrize("line,message", [
    ("V00508.1\t0\t100", "line 2: expected 4 columns"),
    ("V00508.1\t0\tten\ttrain", "line 2: start and end must be integers"),
    ("V00508.1\t1.5\t10\ttrain", "line 2: start and end must be integers"),
    ("V00508.1\t100\t100\ttrain", r"line 2: need 0 <= start < end"),
    ("V00508.1\t-5\t100\ttrain", r"line 2: need 0 <= start < end"),
    ("V00508.1\t0\t100\tvalidation", "line 2: unknown split 'validation'"),
    ("chr1\t0\t100\ttrain", "line 2: the genome has no chromosome 'chr1'"),
    ("V00508.1\t3000\t3920\ttrain", "line 2: V00508.1:3000-3920 ends past the chromosome end"),
    ("V00508.1\t50\t150\ttest", "line 2: test interval overlaps the train interval on line 1"),
])
def test_bad_interval_lines_are_named(tmp_path, genome, line, message):
    path = tmp_path / "bad.bed"
    path.write_text(f"V00508.1\t0\t100\ttrain\n{line}\n")
    raises_one_line(IntervalError, rf"bad\.bed, {message}", read_intervals, path, genome.lengths)


def test_missing_empty_and_one_split_interval_files(tmp_path, genome):
    raises_one_line(IntervalError, "no such interval file", read_intervals, tmp_path / "x.bed")
    (tmp_path / "empty.bed").write_text("# header only\n")
    raises_one_line(IntervalError, "empty.bed: no intervals", read_intervals, tmp_path / "empty.bed")
    (tmp_path / "train.bed").write_text("V00508.1\t0\t100\ttrain\n")
    only_train = read_intervals(tmp_path / "train.bed")
    raises_one_line(IntervalError, r"train\.bed: no intervals in the 'valid' split", select_split,
                    only_train, "valid", tmp_path / "train.bed")
    raises_one_line(IntervalError, "unknown split 'dev'", select_split, only_train, "dev")


def test_whole_chromosomes_split_by_name(genome):
    intervals = chromosome_intervals(genome.lengths, [CHR22], test_chroms=["V00508.1"])
    assert intervals == chromosome_intervals(genome.lengths, [CHR22], test_chroms=["V00508.1"])
    assert [iv.chrom for iv in select_split(intervals, "valid")] == [CHR22]
    assert [iv.chrom for iv in select_split(intervals, "test")] == ["V00508.1"]
    train = select_split(intervals, "train")
    assert len(train) == 15 and all(iv.start == 0 and iv.end == genome.lengths[iv.chrom]
                                    for iv in train)
    raises_one_line(IntervalError, "valid chromosome 'chr1' is not in the genome",
                    chromosome_intervals, genome.lengths, ["chr1"])
    raises_one_line(IntervalError, "both valid and test", chromosome_intervals, genome.lengths,
                    [CHR22], [CHR22])
    raises_one_line(IntervalError, "at least one validation", chromosome_intervals,
                    genome.lengths, [])
    raises_one_line(IntervalError, "no intervals in the 'train' split", chromosome_intervals,
                    {"a": 10, "b": 20}, ["a"], ["b"])


# --- genome windows ----------------------------------------------------------------------------

def test_windows_are_pieces_of_the_training_split(genome, sequences, intervals):
    source = GenomeWindows(genome, intervals, WindowConfig(seq_len=256, batch_size=16), seed=3)
    train = split_text(sequences, intervals, "train")
    held_out = split_text(sequences, intervals, "valid") + split_text(sequences, intervals, "test")
    for _ in range(4):
        batch = source.next_batch()
        assert batch["objective"] == "clm" and batch["input_ids"].shape == (16, 256)
        for row, labels in zip(batch["input_ids"], batch["labels"]):
            text = DNA.decode(row)
            assert row[0] == DNA.id("[SEP]")
            assert len(text) == 255 and text in train and text not in held_out
            assert torch.equal(labels, torch.where(row == DNA.id("N"), IGNORE_INDEX, row))


def test_windows_are_uniform_over_positions(genome, intervals):
    recorder = Recording(genome)
    source = GenomeWindows(recorder, intervals, WindowConfig(seq_len=1024, batch_size=100))
    rows = torch.cat([source.next_batch()["input_ids"] for _ in range(30)])
    assert (rows[:, 0] == DNA.id("[SEP]")).all()
    rows = rows[:, 1:]
    assert torch.equal(torch.stack([encode_dna(genome.fetch(*call)) for call in recorder.calls]), rows)
    assert all(iv.split == "train" and len(iv) >= 1023 for iv in source.intervals)
    starts = {}
    for iv in source.intervals:
        starts[iv.chrom] = starts.get(iv.chrom, 0) + len(iv) - 1022
    share = sum(chrom == "BA000025.2" for chrom, _, _ in recorder.calls) / len(rows)
    assert share == pytest.approx(starts["BA000025.2"] / sum(starts.values()), abs=0.03)
    within = [(start - iv.start) / (len(iv) - 1023) for chrom, start, _ in recorder.calls
              for iv in source.intervals if iv.chrom == chrom and iv.start <= start < iv.end]
    assert len(within) == len(rows) and sum(within) / len(within) == pytest.approx(0.5, abs=0.03)


def test_reverse_complement_augmentation_applies_at_rate_p(genome, intervals):
    for p, low, high in ((0.0, 0, 0), (0.5, 0.4, 0.6), (1.0, 1, 1)):
        recorder = Recording(genome)
        source = GenomeWindows(recorder, intervals, WindowConfig(64, 100, rc_prob=p), seed=1)
        ids = torch.cat([source.next_batch()["input_ids"] for _ in range(3)])[:, 1:]
        fetched = torch.stack([encode_dna(genome.fetch(*call)) for call in recorder.calls])
        rc = reverse_complement(fetched)
        flipped = (ids == rc).all(1) & ~(ids == fetched).all(1)
        assert ((ids == fetched).all(1) | flipped).all()
        assert low <= flipped.float().mean().item() <= high


def test_mlm_windows_mask_bases_only(genome, intervals):
    config = WindowConfig(seq_len=512, batch_size=8, objective="mlm", rc_prob=0.5)
    batch = GenomeWindows(genome, intervals, config).next_batch()
    selected = batch["labels"] != IGNORE_INDEX
    assert batch["objective"] == "mlm"
    assert is_base(batch["labels"][selected]).all()
    assert selected.float().mean().item() == pytest.approx(0.15, abs=0.01)
    assert (batch["input_ids"][selected] == DNA.id("[MASK]")).float().mean() > 0.7


def test_windows_are_deterministic_and_resume_exactly(genome, intervals):
    config = WindowConfig(seq_len=128, batch_size=4, objective="mlm", rc_prob=0.5)
    a = GenomeWindows(genome, intervals, config, seed=7)
    b = GenomeWindows(genome, intervals, config, seed=7)
    first = [a.next_batch() for _ in range(3)]
    assert all(torch.equal(x["input_ids"], b.next_batch()["input_ids"]) for x in first)
    assert not torch.equal(first[0]["input_ids"],
                           GenomeWindows(genome, intervals, config, seed=8).next_batch()["input_ids"])

    state = a.state_dict()
    expected = [a.next_batch() for _ in range(3)]
    resumed = GenomeWindows(genome, intervals, config, seed=0)
    resumed.load_state_dict(state)
    for want in expected:
        got = resumed.next_batch()
        assert all(torch.equal(want[k], got[k]) for k in ("input_ids", "labels"))
    assert resumed.batches_drawn == a.batches_drawn == 6


def test_resume_refuses_other_settings_or_intervals(genome, intervals):
    config = WindowConfig(seq_len=128, batch_size=4)
    state = GenomeWindows(genome, intervals, config).state_dict()
    other = GenomeWindows(genome, intervals, WindowConfig(seq_len=128, batch_size=4, rc_prob=0.5))
    raises_one_line(ConfigError, "'rc_prob' is 0.5 but the saved source used 0.0",
                    other.load_state_dict, state)
    fewer = GenomeWindows(genome, intervals[:-1], config)
    raises_one_line(ConfigError, "intervals differ", fewer.load_state_dict, state)


def test_trainer_resumes_genome_windows_through_a_checkpoint(tmp_path, genome, intervals):
    config = WindowConfig(seq_len=32, batch_size=2, objective="mlm")
    cfg = TrainConfig(max_steps=2, batch_size=2, save_every=2, eval_every=2, eval_batches=2,
                      log_every=1, progress=False, device="cpu")
    valid = functools.partial(genome_eval_batches, genome, intervals, config, "valid", 2)
    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset("tiny-mlstm"))
    Trainer(model, cfg, GenomeWindows(genome, intervals, config, seed=4), tmp_path, valid).train()

    straight = GenomeWindows(genome, intervals, config, seed=4)
    for _ in range(2):
        straight.next_batch()
    resumed = GenomeWindows(genome, intervals, config, seed=0)
    Trainer(XLSTMLanguageModel(preset("tiny-mlstm")), cfg, resumed, tmp_path, valid, resume=True)
    assert torch.equal(resumed.next_batch()["input_ids"], straight.next_batch()["input_ids"])


def test_too_n_windows_are_redrawn_and_n_is_never_a_target(tmp_path):
    gaps = "N" * 300 + "ACGT" * 25 + "N" * 100
    path = write_fasta(tmp_path / "gaps.fa", [("c1", gaps), ("c2", "N" * 64)])
    g = Genome(path)
    intervals = [Interval("c1", 0, len(gaps), "train")]
    source = GenomeWindows(g, intervals, WindowConfig(seq_len=40, batch_size=50, max_n_fraction=0.25))
    batch = source.next_batch()
    is_n = batch["input_ids"] == DNA.id("N")
    assert is_n.float().mean(1).max() <= 0.25 and is_n.any()
    assert (batch["labels"][is_n] == IGNORE_INDEX).all()
    all_n = GenomeWindows(g, [Interval("c2", 0, 64, "train")], WindowConfig(seq_len=16, batch_size=1))
    raises_one_line(GenomeError, "held more than 50% N", all_n.next_batch)


def test_short_intervals_are_skipped_and_bad_ones_refused(genome, intervals):
    source = GenomeWindows(genome, intervals, WindowConfig(seq_len=4000, batch_size=1))
    assert all(len(iv) >= 4000 for iv in source.intervals)
    assert len(source.intervals) < len(select_split(intervals, "train"))
    raises_one_line(IntervalError, "no train interval holds a window of 69999 bases",
                    GenomeWindows, genome, intervals, WindowConfig(seq_len=70_000, batch_size=1))
    raises_one_line(IntervalError, "no intervals in the 'test' split", GenomeWindows, genome,
                    intervals[5:], WindowConfig(seq_len=64, batch_size=1), split="test")
    raises_one_line(IntervalError, "outside the genome", GenomeWindows, genome,
                    [Interval("V00508.1", 0, 5000, "train")], WindowConfig(seq_len=64, batch_size=1))


@pytest.mark.parametrize("fields,message", [
    (dict(seq_len=0), "'seq_len' must be a positive integer"),
    (dict(batch_size=2.0), "'batch_size' must be a positive integer"),
    (dict(objective="fim"), "'objective' must be one of clm, mlm"),
    (dict(rc_prob=1.5), "'rc_prob' must be in"),
    (dict(max_n_fraction=1.0), "'max_n_fraction' must be in"),
])
def test_bad_window_config_is_refused(fields, message):
    raises_one_line(ConfigError, message, WindowConfig, **{"seq_len": 8, "batch_size": 2, **fields})


def test_eval_batches_walk_each_interval_in_order_and_repeat(genome, intervals):
    config = WindowConfig(seq_len=1000, batch_size=7, objective="mlm")
    batches = list(genome_eval_batches(genome, intervals, config))
    again = list(genome_eval_batches(genome, intervals, config))
    assert len(batches) == 3 * 65 // 7 + 1 and batches[-1]["input_ids"].shape == (3 * 65 % 7, 1000)
    for a, b in zip(batches, again):
        assert all(torch.equal(a[k], b[k]) for k in ("input_ids", "labels"))

    clm = list(genome_eval_batches(genome, intervals, WindowConfig(1000, 7), split="test"))
    rows = torch.cat([b["input_ids"] for b in clm])
    assert len(rows) == 65 + 37
    assert DNA.decode(rows[0]) == genome.fetch(CHR22, 196_608, 197_607)
    assert DNA.decode(rows[65]) == genome.fetch(CHR22, 262_144, 263_143)
    capped = list(genome_eval_batches(genome, intervals, config, max_batches=2))
    assert len(capped) == 2 and torch.equal(capped[1]["labels"], batches[1]["labels"])
    raises_one_line(ConfigError, "'max_batches'", genome_eval_batches, genome, intervals, config,
                    max_batches=0)


def test_genome_batches_train_a_model_with_either_objective(genome, intervals):
    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset("tiny-mlstm"))
    for objective in ("clm", "mlm"):
        config = WindowConfig(seq_len=64, batch_size=2, objective=objective)
        batch = GenomeWindows(genome, intervals, config).next_batch()
        loss = model.loss(**batch)
        assert torch.isfinite(loss) and loss.item() == pytest.approx(2.5, abs=1.0)
