"""save_pretrained / from_pretrained: identical outputs, clear one-line errors on bad files."""

import json

import pytest
import torch

from bioxlstm import CheckpointError, XLSTMLanguageModel, preset


@pytest.fixture
def saved(tmp_path):
    model = XLSTMLanguageModel(preset("tiny-mixed", rope=True)).eval()
    model.save_pretrained(tmp_path / "ckpt")
    return model, tmp_path / "ckpt"


def test_save_load_gives_identical_outputs(saved):
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                      "tokenizer.json"]
    from bioxlstm.alphabets import DNA
    from bioxlstm.vocabulary import read_vocabulary

    assert read_vocabulary(path) is DNA  # every checkpoint keeps its vocabulary
    loaded = XLSTMLanguageModel.from_pretrained(path).eval()
    assert loaded.config == model.config
    x = torch.randint(0, 12, (2, 30))
    assert torch.equal(loaded(x).logits, model(x).logits)


def test_truncated_weights_are_refused_naming_the_file(saved):
    _, path = saved
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors") as err:
        XLSTMLanguageModel.from_pretrained(path)
    assert "\n" not in str(err.value)


def test_garbage_and_missing_files_are_refused(saved, tmp_path):
    _, path = saved
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        XLSTMLanguageModel.from_pretrained(path)
    with pytest.raises(CheckpointError, match="config.json: no such file"):
        XLSTMLanguageModel.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="not available from the Hugging Face Hub"):
        XLSTMLanguageModel.from_pretrained("nobody/nothing", local_files_only=True)


def test_config_that_does_not_match_weights_is_refused(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["d_model"] = 64
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match"):
        XLSTMLanguageModel.from_pretrained(path)


def test_unknown_config_field_is_named(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["d_modle"] = 64
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="d_modle"):
        XLSTMLanguageModel.from_pretrained(path)


def test_no_temporary_files_are_left_behind(saved):
    _, path = saved
    assert not [p for p in path.iterdir() if p.name.startswith(".")]


def test_saved_directory_follows_the_hub_mixin_layout(saved):
    _, path = saved
    card = (path / "README.md").read_text()
    assert "library_name: bioxlstm" in card and "2411.04165" in card
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "bioxlstm" and "d_model" in config


def test_hub_repository_loads_offline_from_the_cache(saved, tmp_path):
    model, path = saved
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-dna"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((path / name).read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    loaded = XLSTMLanguageModel.from_pretrained("acme/tiny-dna", cache_dir=tmp_path / "hub",
                                                local_files_only=True).eval()
    x = torch.randint(0, 12, (2, 17))
    assert torch.equal(loaded(x).logits, model(x).logits)
