"""Embeddings: chunked == unchunked, bounded pieces for long records, output formats, CLI."""

import sys

import numpy as np
import pytest
import torch

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.alphabets import DNA
from bioxlstm.cli import main
from bioxlstm.pooling import mean_pool
from bioxlstm.tasks.embed import EmbedConfig, EmbedOutputError, embed_fasta
from bioxlstm.tasks.inputs import SequenceTooLongError, length_batches, pad_batch, pooled_embeddings

CFG = dict(progress=False, device="cpu")


def random_dna(n, seed):
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list("ACGT"), size=n))


@pytest.mark.parametrize("name", ["tiny-mlstm", "tiny-mixed"])
def test_chunked_pooled_equals_unchunked(name):
    model = XLSTMLanguageModel(preset(name)).eval()
    seqs = [DNA.encode(random_dna(n, n)) for n in (150, 37, 90)]
    ids, lengths = pad_batch(seqs, DNA)
    whole, whole_tokens = pooled_embeddings(model, ids, lengths, 1000, keep_tokens=True)
    pieces, piece_tokens = pooled_embeddings(model, ids, lengths, 23, keep_tokens=True)
    torch.testing.assert_close(pieces, whole, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(whole, mean_pool(model(ids, lengths=lengths).hidden, lengths))
    for seq, a, b in zip(seqs, whole_tokens, piece_tokens):
        assert a.shape == b.shape == (len(seq), 32)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_length_batches_keep_long_records_apart_from_short_ones():
    lengths = [5, 100_000, 7, 6, 3000, 9]
    assert length_batches(lengths, 3, 4096) == [[1], [4, 5, 2], [3, 0]]
    assert sorted(sum(length_batches(lengths, 2, 10), [])) == list(range(6))


def test_model_that_sees_the_whole_sequence_refuses_long_inputs():
    model = XLSTMLanguageModel(preset("tiny-mlstm", bidirectional=True)).eval()
    ids, lengths = pad_batch([DNA.encode("ACGT" * 10)], DNA)
    assert pooled_embeddings(model, ids, lengths, 64)[0].shape == (1, 32)
    with pytest.raises(SequenceTooLongError, match="cannot run in pieces"):
        pooled_embeddings(model, ids, lengths, 16)


def test_embed_fasta_npy_parquet_and_per_token(tmp_path, checkpoint):
    seqs = {"r1": random_dna(50, 1), "r2": random_dna(9, 2), "r3": "ACGTN" * 7}
    fasta = tmp_path / "x.fa"
    fasta.write_text("".join(f">{k} description\n{v}\n" for k, v in seqs.items()))
    config = EmbedConfig(batch_size=2, chunk_tokens=16, **CFG)
    result = embed_fasta(fasta, checkpoint, tmp_path / "e.npy", tmp_path / "t.npz", config)
    assert result.records == 3 and result.dim == 32
    pooled = np.load(tmp_path / "e.npy")
    assert pooled.dtype == np.float32 and pooled.shape == (3, 32)
    assert (tmp_path / "e.ids.txt").read_text().split() == list(seqs)
    model = XLSTMLanguageModel.from_pretrained(checkpoint).eval()
    tokens = np.load(tmp_path / "t.npz")
    for row, (name, seq) in enumerate(seqs.items()):
        ids = torch.tensor([[DNA.id("[SEP]"), *DNA.encode(seq)]])
        expected = model.embed(ids).per_token[0, 1:]
        assert np.allclose(tokens[name], expected.numpy(), atol=1e-5)
        assert np.allclose(pooled[row], expected.mean(0).numpy(), atol=1e-5)

    embed_fasta(fasta, checkpoint, tmp_path / "e.parquet", config=config)
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "e.parquet").to_pydict()
    assert table["id"] == list(seqs)
    assert np.allclose(np.array(table["embedding"]), pooled, atol=1e-6)


def test_output_errors(tmp_path, checkpoint, monkeypatch):
    fasta = tmp_path / "x.fa"
    fasta.write_text(">a\nACGT\n>a\nGG\n")
    with pytest.raises(EmbedOutputError, match=r"must end in \.npy or \.parquet"):
        embed_fasta(fasta, checkpoint, tmp_path / "e.csv")
    with pytest.raises(EmbedOutputError, match="occurs twice"):
        embed_fasta(fasta, checkpoint, tmp_path / "e.npy", tmp_path / "t.npz", EmbedConfig(**CFG))
    assert not (tmp_path / "t.npz").exists()
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(EmbedOutputError, match="needs pyarrow"):
        embed_fasta(fasta, checkpoint, tmp_path / "e.parquet")


def test_cli_embeds_a_200k_base_record_in_bounded_pieces(tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "one-block"
    XLSTMLanguageModel(preset("tiny-mlstm", num_blocks=1)).save_pretrained(checkpoint)
    fasta = tmp_path / "long.fa"
    fasta.write_text(f">long\n{random_dna(200_000, 0)}\n>short\nACGTACGT\n")
    widths = []
    forward = XLSTMLanguageModel.forward

    def recording(self, input_ids, *args, **kwargs):
        widths.append(input_ids.shape[1])
        return forward(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(XLSTMLanguageModel, "forward", recording)
    assert main(["embed", str(checkpoint), "--fasta", str(fasta), "--out", str(tmp_path / "e.npy"),
                 "--chunk-tokens", "4096", "--device", "cpu"]) == 0
    assert max(widths) == 4096 and len(widths) == -(-200_001 // 4096) + 1  # + the short record
    pooled = np.load(tmp_path / "e.npy")
    assert pooled.shape == (2, 32) and np.isfinite(pooled).all()
    assert "embedded 2 records (32 dimensions)" in capsys.readouterr().out


def test_cli_embed_errors_and_help(tmp_path, capsys):
    assert main(["embed", str(tmp_path), "--fasta", str(tmp_path / "x.fa"),
                 "--out", str(tmp_path / "e.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bioxlstm: error:") and "config.json" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    assert "--per-token" in capsys.readouterr().out


def test_smiles_molecules_are_embedded_with_their_names(tmp_path):
    from bioxlstm.smiles import SmilesTokenizer

    tokenizer = SmilesTokenizer.build(["CCO", "c1ccccc1", "CCN"])
    torch.manual_seed(0)
    XLSTMLanguageModel(preset("tiny-chem-xlstm", vocab_size=len(tokenizer))).save_pretrained(tmp_path / "c")
    tokenizer.save(tmp_path / "c")
    smi = tmp_path / "m.smi"
    smi.write_text("SMILES,name\nCCO,ethanol\nc1ccccc1,benzene\nCCN\n")
    out = tmp_path / "e.npy"
    assert main(["embed", str(tmp_path / "c"), "--smiles", str(smi), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert np.load(out).shape == (3, 64)
    assert out.with_suffix(".ids.txt").read_text().split() == ["ethanol", "benzene", "mol4"]
    assert main(["embed", str(tmp_path / "c"), "--fasta", str(smi), "--out", str(out)]) == 2
    smi.write_text("CCO\nCCSi\n")
    assert main(["embed", str(tmp_path / "c"), "--smiles", str(smi), "--out", str(out)]) == 2
