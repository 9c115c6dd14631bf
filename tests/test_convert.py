"""Converted official checkpoints compute what the official code computed (tests/fixtures/official):
full forward, the input fed in pieces carrying the state and the one-token step (causal models),
Prot-xLSTM's recorded generation, and the token ids of each official tokenizer."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from bioxlstm import XLSTMLanguageModel
from bioxlstm.alphabets import DNA, PROTEIN
from bioxlstm.convert import convert_official
from bioxlstm.smiles import SmilesTokenizer

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official"
TOL = 1e-4  # max |logits - official| in float32 (measured: 2.3e-6 at most, docs/pretrained.md)
DNA_CASES = {  # fixture: (checkpoint folder, causal)
    "slstm_causal-cuda": ("dna/slstm_causal/cuda", True),
    "slstm_causal-vanilla": ("dna/slstm_causal/vanilla", True),
    "mlstm_causal": ("dna/mlstm_causal", True),
    "mlstm_causal_32k": ("dna/mlstm_causal_32k", True),
    "slstm_bidir-cuda": ("dna/slstm_bidir/cuda", False),
    "slstm_bidir-vanilla": ("dna/slstm_bidir/vanilla", False),
    "slstm_rcps-cuda": ("dna/slstm_rcps/cuda", False),
    "slstm_rcps-vanilla": ("dna/slstm_rcps/vanilla", False),
    "mlstm_bidir": ("dna/mlstm_bidir", False),
}


def max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Convert a fixture once per module: the bioxlstm checkpoint written by convert_official, loaded."""
    cache = {}

    def get(rel: str) -> XLSTMLanguageModel:
        if rel not in cache:
            src = FIXTURES / rel
            if rel.startswith("dna/"):
                src = src / "checkpoints" / "test" / "loss.ckpt"
            out = convert_official(src, tmp_path_factory.mktemp("converted"))
            cache[rel] = XLSTMLanguageModel.from_pretrained(out).eval()
        return cache[rel]

    return get


def in_pieces(model, ids, cuts, position_ids=None):
    """Logits of ids fed in pieces [0, c1), [c1, c2), ..., carrying the state."""
    pieces, state = [], None
    for a, b in zip([0, *cuts], [*cuts, ids.shape[1]]):
        pos = None if position_ids is None else position_ids[:, a:b]
        out = model(ids[:, a:b], state=state, return_state=True, position_ids=pos)
        pieces.append(out.logits)
        state = out.state
    return torch.cat(pieces, 1)


def stepwise(model, ids, position_ids=None):
    """Logits at every position from model.step, one token at a time after the first."""
    pos0 = None if position_ids is None else position_ids[:, :1]
    out = model(ids[:, :1], return_state=True, position_ids=pos0)
    logits = [out.logits[:, 0]]
    for t in range(1, ids.shape[1]):
        pos = None if position_ids is None else position_ids[:, t]
        logits.append(model.step(ids[:, t], out.state, position_ids=pos))
    return torch.stack(logits, 1)


@pytest.mark.parametrize("case", list(DNA_CASES))
def test_dna_full_forward(case, converted):
    folder, _ = DNA_CASES[case]
    io = load_file(FIXTURES / folder.split("/cuda")[0].split("/vanilla")[0] / "io.safetensors")
    with torch.no_grad():
        logits = converted(folder)(io["input_ids"]).logits
    if "positions" in io:  # the 32k fixture keeps some positions only
        logits = logits[:, io["positions"]]
    assert max_diff(logits, io["logits"]) < TOL


@pytest.mark.parametrize("case", [c for c, (_, causal) in DNA_CASES.items() if causal])
def test_dna_in_pieces_and_step(case, converted):
    folder, _ = DNA_CASES[case]
    io = load_file(FIXTURES / folder.split("/cuda")[0].split("/vanilla")[0] / "io.safetensors")
    model, ids = converted(folder), io["input_ids"]
    with torch.no_grad():
        if "positions" in io:
            logits = in_pieces(model, ids, [5000, 16384, 16385, 30001])[:, io["positions"]]
            assert max_diff(logits, io["logits"]) < TOL
            return
        assert max_diff(in_pieces(model, ids, [37, 64, 65]), io["logits"]) < TOL
    assert max_diff(stepwise(model, ids), io["logits"]) < TOL


def test_prot_full_pieces_and_step(converted):
    io = load_file(FIXTURES / "prot/rope/io.safetensors")
    model, ids, pos = converted("prot/rope"), io["input_ids"], io["position_ids"]
    with torch.no_grad():
        assert max_diff(model(ids, position_ids=pos).logits, io["logits"]) < TOL
        assert max_diff(in_pieces(model, ids, [31, 32, 100], pos), io["logits"]) < TOL
    steps = stepwise(model, ids, pos)
    assert max_diff(steps, io["step_logits"]) < TOL and max_diff(steps, io["logits"]) < TOL


def test_prot_recorded_generation_replays(converted):
    """The official generate_sequence: a chunkwise forward over the context, then model.step per token."""
    rec = load_file(FIXTURES / "prot/rope/generation.safetensors")
    model = converted("prot/rope")
    with torch.no_grad():
        out = model(rec["context_input_ids"], position_ids=rec["context_position_ids"], return_state=True)
    scores = [out.logits[:, -1]]
    tokens, positions = rec["generated_tokens"], rec["step_position_ids"]
    for j in range(1, tokens.shape[1]):
        scores.append(model.step(tokens[:, j - 1], out.state, position_ids=positions[:, j - 1]))
    assert max_diff(torch.stack(scores, 1), rec["scores"]) < TOL


def test_dna_config_from_the_checkpoint_alone(tmp_path):
    """Without model_config.json the config comes from the .ckpt's hyper_parameters (omegaconf
    objects read as inert stand-ins); the model is the same."""
    ckpt = tmp_path / "loss.ckpt"
    ckpt.write_bytes((FIXTURES / "dna/slstm_rcps/vanilla/checkpoints/test/loss.ckpt").read_bytes())
    model = XLSTMLanguageModel.from_pretrained(convert_official(ckpt, tmp_path / "out")).eval()
    assert model.config.source["config_from"] == "hyper_parameters"
    io = load_file(FIXTURES / "dna/slstm_rcps/io.safetensors")
    with torch.no_grad():
        assert max_diff(model(io["input_ids"]).logits, io["logits"]) < TOL


def test_prot_folder_with_safetensors_weights(tmp_path, converted):
    folder = tmp_path / "prot"
    folder.mkdir()
    (folder / "config.json").write_text((FIXTURES / "prot/rope/config.json").read_text())
    state = torch.load(FIXTURES / "prot/rope/pytorch_model.bin", weights_only=True)
    save_file(state, str(folder / "model.safetensors"))
    model = XLSTMLanguageModel.from_pretrained(convert_official(folder, tmp_path / "out"))
    reference = converted("prot/rope").state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


def chem_fixture():
    io = load_file(FIXTURES / "chem/default/io.safetensors")
    with safe_open(FIXTURES / "chem/default/io.safetensors", "pt") as f:
        smiles = json.loads(json.loads(f.metadata()["info"])["smiles"])
    args = json.loads((FIXTURES / "chem/default/init_arguments.json").read_text())
    return io, smiles, {int(j): t for j, t in args["label2token"].items()}, args["vocab_size"]


def test_chem_log_probabilities_over_the_official_vocabulary(converted, tmp_path):
    io, smiles, label2token, rows = chem_fixture()
    model = converted("chem/default")
    tokenizer = SmilesTokenizer.load(convert_official(FIXTURES / "chem/default", tmp_path))
    to_ours = torch.tensor([tokenizer.id(label2token.get(j, f"[unused{j}]")) for j in range(rows)])
    ids = to_ours[io["input_ids"]]
    reference = io["logits"].log_softmax(-1)
    with torch.no_grad():
        for logits in (model(ids).logits, in_pieces(model, ids, [1, 50, 51])):
            assert max_diff(logits.log_softmax(-1)[..., to_ours], reference) < TOL
            assert max_diff(logits[..., to_ours], io["logits"]) < TOL
            assert torch.isinf(logits[..., tokenizer.id("[UNK]")]).all()  # the added [UNK] takes nothing
    assert max_diff(stepwise(model, ids)[..., to_ours], io["step_logits"]) < TOL


def test_chem_tokenizer_feeds_the_official_ids(tmp_path):
    io, smiles, label2token, rows = chem_fixture()
    tokenizer = SmilesTokenizer.load(convert_official(FIXTURES / "chem/default", tmp_path))
    to_ours = torch.tensor([tokenizer.id(label2token.get(j, f"[unused{j}]")) for j in range(rows)])
    for row, s in enumerate(smiles):
        ours = [tokenizer.id("[BEG]"), *tokenizer.encode(s), tokenizer.id("[END]")]
        official = to_ours[io["input_ids"][row]].tolist()
        assert official[: len(ours)] == ours and set(official[len(ours):]) == {tokenizer.id("[PAD]")}
    assert tokenizer.tokens[:4] == ("[PAD]", "[BEG]", "[END]", "[UNK]")


def test_alphabets_have_the_official_token_ids():
    """DNA: DNA-xLSTM's CaduceusTokenizer; protein: Prot-xLSTM's AA_TO_ID (NOTES 2.8, 3.7)."""
    assert DNA.tokens == ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]",
                          "A", "C", "G", "T", "N")
    assert DNA.complement_ids() == [0, 1, 2, 3, 4, 5, 6, 10, 9, 8, 7, 11]
    assert PROTEIN.tokens == ("<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWC", *"XBUZO",
                              ".", "-", "<null_1>", "<mask>", "<mask-1>", "<mask-2>", "<mask-3>",
                              "<mask-4>", "<mask-5>")
