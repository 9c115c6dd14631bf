"""ModelConfig validation, YAML loading and presets."""

import pytest

from bioxlstm import ConfigError, ModelConfig, preset
from bioxlstm.config import PRESETS, round_up


def test_presets_have_the_spec_shapes():
    assert preset("dna-xlstm-500k").slstm_at == [0, 1, 2, 3, 4]
    assert preset("dna-xlstm-4m").slstm_at == [] and preset("dna-xlstm-4m").num_blocks == 9
    prot = preset("prot-xlstm-26m")
    assert (prot.d_model, prot.num_blocks, prot.mlstm_heads, prot.rope) == (512, 16, 4, True)
    assert preset("chem-xlstm-15m").dropout == 0.25
    assert preset("chem-xlstm-15m-icl").context_length == 4096


def test_round_up_and_inner_widths():
    assert round_up(281.6, 64) == 320 and round_up(512, 64) == 512
    assert preset("dna-xlstm-4m").mlstm_inner_dim == 512


@pytest.mark.parametrize("field,value", [
    ("d_model", 0), ("num_blocks", -1), ("dropout", 1.5), ("mlstm_form", "fast"),
    ("slstm_at", [7]), ("vocab_size", "12"), ("bidirectional", "yes"), ("rc_equivariant", 1),
])
def test_bad_fields_are_named(field, value):
    with pytest.raises(ConfigError, match=field):
        preset("tiny-mixed", **{field: value})


def test_rc_equivariance_needs_the_dna_vocabulary():
    assert preset("dna-xlstm-500k", rc_equivariant=True).rc_equivariant
    assert ModelConfig(vocab_size=12, rc_equivariant=True).rc_equivariant
    assert not preset("dna-xlstm-500k").rc_equivariant
    for overrides in ({"alphabet": "protein", "vocab_size": 38}, {"vocab_size": 16},
                      {"alphabet": "smiles"}):
        with pytest.raises(ConfigError, match="rc_equivariant"):
            preset("tiny-mixed", rc_equivariant=True, **overrides)


def test_unknown_preset_and_fields():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("dna-xlstm-9000")
    with pytest.raises(ConfigError, match="d_modle"):
        ModelConfig.from_dict({"vocab_size": 5, "d_modle": 3})


def test_yaml_with_preset_and_overrides(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("model:\n  preset: dna-xlstm-500k\n  context_length: 2048\n")
    config = ModelConfig.from_file(path)
    assert config.context_length == 2048 and config.d_model == 128
    path.write_text("vocab_size: 10\nd_model: 64\nnum_blocks: 2\nslstm_at: [1]\nslstm_heads: 2\n")
    assert ModelConfig.from_file(path).slstm_at == [1]
    path.write_text("d_model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        ModelConfig.from_file(path)


def test_dict_round_trip():
    for name in PRESETS:
        config = preset(name)
        assert ModelConfig.from_dict(config.to_dict()) == config


def test_shipped_yaml_configs_load():
    from pathlib import Path

    from bioxlstm.train import TrainConfig

    paths = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert paths
    for path in paths:
        assert ModelConfig.from_file(path).vocab_size > 0
        assert TrainConfig.from_file(path).max_steps > 0
