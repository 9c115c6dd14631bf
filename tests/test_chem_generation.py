"""SMILES data, in-context rows, sampling (determinism, batched == one at a time) and the CLI path."""

import json

import pytest
import torch

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.cli import main
from bioxlstm.data.smiles import read_smiles, valid_smiles
from bioxlstm.data.smiles_batches import DomainContexts, MoleculeBatches, icl_row, pad_rows
from bioxlstm.errors import ConfigError
from bioxlstm.smiles import SmilesTokenizer
from bioxlstm.tasks.molecule_generation import GenerationConfig, read_context, sample_smiles

MOLS = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "CCCl", "OCCO", "c1ccncc1", "CC(C)O", "C#N", "CBr"]


@pytest.fixture()
def tiny():
    tokenizer = SmilesTokenizer.build(MOLS)
    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset("tiny-mlstm", alphabet="smiles", vocab_size=len(tokenizer),
                                      context_length=64)).eval()
    return model, tokenizer


def test_validity_filter_counts_and_keeps_order():
    kept, summary = valid_smiles(["CCO", "C1CC", "", "c1ccccc1", "xyz"])
    assert kept == ["CCO", "c1ccccc1"] and (summary.total, summary.invalid) == (5, 3)
    assert "5 read, 2 kept, 3 invalid skipped (e.g. 'C1CC', '', 'xyz')" in summary.line()


def test_icl_row_and_domain_batches():
    tok = SmilesTokenizer.build(MOLS)
    mols = [tok.encode(s) for s in ("CCO", "CN", "C")]
    row = icl_row(tok, mols, [2, 0, 1], max_len=9)
    assert tok.decode(row) == "C.CCO.CN" and row[0] == tok.bos_id and len(row) == 9
    assert tok.decode(icl_row(tok, mols, [2, 0, 1], max_len=8)) == "C.CCO"  # whole molecules only
    source = DomainContexts(tok, [mols, [tok.encode("CCCl")]], batch_size=4, max_len=40, seed=1)
    batch = source.next_batch()
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        text = tok.decode(ids)
        parts = text.split(".")
        assert sorted(parts) in (["C", "CCO", "CN"], ["CCCl"])
        assert (labels[ids == tok.pad_id] == -100).all()
    orders = {tok.decode(source.next_batch()["input_ids"][0]) for _ in range(30)}
    assert len(orders) > 2  # a fresh random order each time
    state = source.state_dict()
    again = DomainContexts(tok, [mols, [tok.encode("CCCl")]], batch_size=4, max_len=40, seed=7)
    again.load_state_dict(state)
    assert torch.equal(again.next_batch()["input_ids"], source.next_batch()["input_ids"])


def test_molecule_batches_rows_and_padding():
    tok = SmilesTokenizer.build(MOLS)
    batch = MoleculeBatches(tok, [tok.encode("CCO"), tok.encode("C")], batch_size=6).next_batch()
    for ids in batch["input_ids"].tolist():
        assert ids[0] == tok.bos_id and tok.eos_id in ids
    assert pad_rows([[1, 5, 2], [1, 2]], 0)["labels"].tolist() == [[1, 5, 2], [1, 2, -100]]


def test_sampling_is_deterministic_under_a_seed(tiny):
    model, tok = tiny
    config = GenerationConfig(num_samples=6, batch_size=4, max_tokens=12, seed=3, progress=False)
    first = sample_smiles(model, tok, config)
    assert len(first) == 6 and first == sample_smiles(model, tok, config)
    other = sample_smiles(model, tok, GenerationConfig(num_samples=6, batch_size=4, max_tokens=12,
                                                        seed=4, progress=False))
    assert other != first


def test_batched_generation_equals_one_at_a_time(tiny):
    model, tok = tiny
    prompts = torch.tensor([[tok.bos_id, *tok.encode(p)] for p in ("CC", "c1", "OC", "C#")])
    batched = model.generate(prompts, 15, temperature=0, stop_token=tok.eos_id)
    for j in range(len(prompts)):
        single = model.generate(prompts[j:j + 1], 15, temperature=0, stop_token=tok.eos_id)
        n = single.shape[1]
        assert torch.equal(batched[j, :n], single[0])
        assert (batched[j, n:] == tok.eos_id).all()


def test_in_context_sampling_uses_context_and_skips_unknown(tiny, tmp_path):
    model, tok = tiny
    domain = tmp_path / "domain.smi"
    domain.write_text("CCO.CCN\nc1ccccc1\nC[Pt]C\nnot_smiles\n")
    context = read_context(domain, tok)
    assert context.smiles == ["CCO", "CCN", "c1ccccc1"] and context.unknown == 1
    assert context.summary.invalid == 1
    config = GenerationConfig(num_samples=3, batch_size=2, max_tokens=10, num_context=2, progress=False)
    out = sample_smiles(model, tok, config, context)
    assert len(out) == 3 and all("." not in s for s in out)
    assert out == sample_smiles(model, tok, config, context)


def test_in_context_default_length_fits_the_window(tiny, tmp_path, monkeypatch):
    model, tok = tiny  # a 64-token window: the old default of 150 new tokens did not fit
    icl = SmilesTokenizer.build(MOLS, in_context=True)
    domain = tmp_path / "domain.smi"
    domain.write_text("\n".join(MOLS) + "\n")
    asked = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda ids, n, *a, **kw: asked.append(
        (ids.shape[1], n)) or generate(ids, n, *a, **kw))
    config = GenerationConfig(num_samples=2, batch_size=2, progress=False)
    assert len(sample_smiles(model, icl, config)) == 2
    assert len(sample_smiles(model, tok, config, read_context(domain, tok))) == 2
    (_, alone), (prompt, in_context) = asked
    assert alone == 62 and in_context == 32 and prompt + in_context <= 64
    with pytest.raises(ConfigError, match="max_tokens=63 leaves no room for context"):
        sample_smiles(model, icl, GenerationConfig(num_samples=1, max_tokens=63, progress=False))


def test_cli_pretrain_generate_evaluate(tmp_path, capsys):
    smi = tmp_path / "train.smi"
    smi.write_text("\n".join(MOLS * 4 + ["C1CC", "bad"]) + "\n")
    model_yaml = tmp_path / "model.yaml"
    model_yaml.write_text("preset: tiny-mlstm\ncontext_length: 32\n")
    train_yaml = tmp_path / "train.yaml"
    train_yaml.write_text("eval_every: 2\neval_batches: 1\nprogress: false\n")
    run = tmp_path / "run"
    assert main(["pretrain", "--model-config", str(model_yaml), "--smiles", str(smi), "--run-dir",
                 str(run), "--train-config", str(train_yaml), "--steps", "2", "--batch-size", "4",
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "42 read, 40 kept, 2 invalid skipped" in err
    ckpt = run / "checkpoint"
    assert (ckpt / "tokenizer.json").is_file()
    assert json.loads((ckpt / "config.json").read_text())["alphabet"] == "smiles"
    assert any("valid_loss" in json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())
    gen = tmp_path / "gen.smi"
    assert main(["generate", str(ckpt), "--num-samples", "5", "--batch-size", "2", "--length", "20",
                 "--out", str(gen)]) == 0
    assert len(read_smiles(gen, keep_empty=True)) == 5
    assert main(["generate", str(ckpt), "--num-samples", "2", "--length", "10",
                 "--context-smiles", str(smi), "--num-context", "3"]) == 0
    assert main(["pretrain", "--preset", "tiny-mlstm", "--smiles", str(tmp_path / "none.smi"),
                 "--run-dir", str(tmp_path / "r2")]) == 2
    assert "none.smi: no such file" in capsys.readouterr().err


def test_every_intermediate_checkpoint_carries_the_tokenizer(tmp_path):
    from bioxlstm.config import preset
    from bioxlstm.smiles import TOKENIZER_FILE, SmilesTokenizer
    from bioxlstm.tasks.pretrain_smiles import SmilesData, pretrain_smiles
    from bioxlstm.train import TrainConfig

    smi = tmp_path / "train.smi"
    smi.write_text("\n".join(["CCO", "c1ccccc1", "CC(=O)O", "CCN", "OCCO", "CC(C)C", "C1CCCC1",
                              "CCCl", "CC#N", "COC"] * 3) + "\n")
    config = TrainConfig(max_steps=4, batch_size=2, save_every=2, keep_checkpoints=2, progress=False)
    pretrain_smiles(SmilesData(smi, False, 0.2, 0), preset("tiny-chem-xlstm"), config, tmp_path / "run")
    run = tmp_path / "run"
    (run / TOKENIZER_FILE).unlink()  # nothing may depend on the run directory's copy
    for checkpoint in (run / "checkpoint", run / "checkpoints" / "step-00000002"):
        assert SmilesTokenizer.load(checkpoint).tokens == SmilesTokenizer.load(run / "checkpoint").tokens
        assert (checkpoint / TOKENIZER_FILE).is_file()


def test_an_in_context_model_without_context_ends_molecules_at_the_separator(monkeypatch):
    tokenizer = SmilesTokenizer.build(MOLS, in_context=True)
    assert json.loads(tokenizer.to_json())["in_context"]
    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset("tiny-mlstm", alphabet="smiles", vocab_size=len(tokenizer),
                                      context_length=64)).eval()
    dot = tokenizer.separator_id
    # a model that writes two carbons, then '.', then more: the sample must stop at the '.'
    script = [tokenizer.id("C"), tokenizer.id("C"), dot, tokenizer.id("O"), tokenizer.id("O")]
    calls = []

    def scripted(logits):
        boost = torch.full_like(logits, -50.0)
        boost[..., script[min(len(calls), len(script) - 1)]] = 50.0
        calls.append(1)
        return logits + boost

    model.head.register_forward_hook(lambda module, inputs, output: scripted(output))  # the prompt
    step = model.step
    monkeypatch.setattr(model, "step", lambda *args: scripted(step(*args)))  # each new token
    out = sample_smiles(model, tokenizer, GenerationConfig(num_samples=2, batch_size=2,
                                                           max_tokens=6, progress=False))
    assert out == ["CC", "CC"]


def test_smiles_entries_with_names_keep_only_the_smiles(tmp_path):
    from bioxlstm.data.smiles import read_domains

    domains = tmp_path / "domains.txt"
    domains.write_text("CCO ethanol 17 . c1ccccc1 benzene 18\nCCN amine 3 . CBr bromo 4\n")
    assert read_domains(domains) == [["CCO", "c1ccccc1"], ["CCN", "CBr"]]
    context = tmp_path / "context.smi"
    context.write_text("CCO ethanol 17 . c1ccccc1 benzene 18 . CCN amine 3\n")
    tokenizer = SmilesTokenizer.build(MOLS)
    assert read_context(context, tokenizer).smiles == ["CCO", "c1ccccc1", "CCN"]
    learned = SmilesTokenizer.build([m for d in read_domains(domains) for m in d])
    assert not set(learned.tokens) & {" ", "e", "h", "a", "n", "l", "1 7"}
