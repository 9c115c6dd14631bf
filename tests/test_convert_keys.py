"""The full-size released configurations (tests/fixtures/official/keys/*.json, written by the official
classes on the meta device): every official key maps to a bioxlstm key of the right shape, none is
left over and none is missing; checked on meta tensors, so no 100M-parameter model is allocated."""

import json
from pathlib import Path

import pytest
import torch

from bioxlstm.convert import chem, dna, prot
from bioxlstm.convert.result import expected_shapes
from bioxlstm.errors import ConversionError

KEYS = Path(__file__).resolve().parent / "fixtures" / "official" / "keys"
FILES = sorted(p.name for p in KEYS.glob("*.json"))
HERE = Path("released.pt")


def meta_state(spec: dict, layout: str = "shape") -> dict[str, torch.Tensor]:
    """The key list as meta tensors; layout "vanilla_shape" takes the vanilla sLSTM backend's shapes."""
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    return {t["key"]: torch.empty(t.get(layout, t["shape"]), dtype=dtypes[t["dtype"]], device="meta")
            for t in spec["tensors"]}


def chem_vocabulary(rows: int) -> dict:
    """A stand-in token2label of 31 tokens ([END] in the middle, as the official order has it)."""
    tokens = ["[PAD]", "[BEG]", *"CNO()=123", "[END]", *"cnos#SFPI+-[]H456", "Cl", "Br"]
    return {"token2label": {t: j for j, t in enumerate(tokens)}, "vocab_size": rows}


def convert(name: str, spec: dict, state: dict) -> tuple[dict, dict]:
    """(converted state dict, the bioxlstm config's expected shapes) for one key list."""
    cfg = spec["model_config"]
    if name.startswith("dna"):
        config = dna.model_config(dna.official_fields(cfg, HERE), HERE)
        out, _ = dna.convert_state(state, config, HERE)
    elif name.startswith("prot"):
        config = prot.model_config(spec["config_json"], HERE)
        out = prot.convert_state(state, config, HERE)
    else:
        args = {**cfg, **chem_vocabulary(cfg["vocab_size"])}
        tokenizer, order = chem.vocabulary(args, HERE)
        config = chem.model_config(args, chem.heads(state, HERE), len(tokenizer), HERE)
        out = chem.convert_state(state, config, order, HERE)
    return out, expected_shapes(config)


@pytest.mark.parametrize("name, layout", [(n, "shape") for n in FILES] + [
    (n, "vanilla_shape") for n in FILES if n.startswith("dna") and n != "dna-xlstm-4m.json"])
def test_every_official_key_maps_with_its_shape(name, layout):
    spec = json.loads((KEYS / name).read_text())
    state = meta_state(spec, layout)
    out, expected = convert(name, spec, state)
    assert list(out) == list(expected)
    assert {k: v.shape for k, v in out.items()} == expected
    official = sum(t.numel() for k, t in state.items() if not k.endswith("complement_map"))
    blocks = sum(v.numel() for k, v in out.items() if k not in ("embedding.weight", "head.weight"))
    vocab_rows = 2 * spec["model_config"]["vocab_size"] * out["embedding.weight"].shape[1]
    assert blocks + vocab_rows == official  # every official number lands in bioxlstm exactly once


def test_expected_names_and_released_sizes():
    assert set(FILES) == {f"{n}.json" for n in (
        "dna-xlstm-500k", "dna-xlstm-500k-ps", "dna-xlstm-2m", "dna-xlstm-2m-ps", "dna-xlstm-4m",
        "prot-xlstm-26m", "prot-xlstm-102m", "chem-xlstm-15m", "chem-xlstm-15m-icl")}


@pytest.mark.parametrize("change, message", [
    ("drop", "missing key\\(s\\): backbone.xlstm_block_stack.blocks.3.xlstm.learnable_skip"),
    ("extra", "unexpected key\\(s\\): backbone.xlstm_block_stack.blocks.0.xlstm.extra.weight"),
    ("shape", "shape mismatch\\(es\\): backbone.xlstm_block_stack.blocks.1.xlstm.proj_up.weight"),
    ("prefix", "without the 'backbone.' prefix: model.lm_head.weight"),
])
def test_a_wrong_key_or_shape_is_an_error_naming_it(change, message):
    spec = json.loads((KEYS / "prot-xlstm-102m.json").read_text())
    state = meta_state(spec)
    if change == "drop":
        del state["backbone.xlstm_block_stack.blocks.3.xlstm.learnable_skip"]
    elif change == "extra":
        state["backbone.xlstm_block_stack.blocks.0.xlstm.extra.weight"] = torch.empty(3, device="meta")
    elif change == "shape":
        state["backbone.xlstm_block_stack.blocks.1.xlstm.proj_up.weight"] = torch.empty(8, 8, device="meta")
    else:
        state["model.lm_head.weight"] = state.pop("backbone.lm_head.weight")
    with pytest.raises(ConversionError, match=message) as err:
        convert("prot-xlstm-102m.json", spec, state)
    assert "\n" not in str(err.value)
