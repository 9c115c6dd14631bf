"""Bad official checkpoints: `bioxlstm convert` refuses each in one line with exit status 2, and no
pickled code ever runs."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from bioxlstm.cli import main
from bioxlstm.convert.loading import STAND_INS, load_pickle, plain

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official"
DNA_CKPT = FIXTURES / "dna/slstm_causal/cuda/checkpoints/test/loss.ckpt"
RAN = []


class Payload:
    """Unpickling this would append to RAN (and could do anything else)."""

    def __reduce__(self):
        return (RAN.append, ("pickled code ran",))


def convert_fails(capsys, src, out, *extra) -> str:
    """Run `bioxlstm convert`, expect exit status 2 and one line on standard error; return it."""
    assert main(["convert", str(src), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bioxlstm: error: ") and err.count("\n") == 1, err
    return err


def weights_only_ckpt() -> dict:
    """The DNA fixture's Lightning checkpoint without its omegaconf hyper_parameters."""
    return {"state_dict": load_pickle(DNA_CKPT, with_omegaconf=True)["state_dict"], "epoch": 0}


def copy_fixture(rel: str, dest: Path) -> Path:
    shutil.copytree(FIXTURES / rel, dest)
    return dest


def test_truncated_ckpt(tmp_path, capsys):
    bad = tmp_path / "run" / "loss.ckpt"
    bad.parent.mkdir()
    bad.write_bytes(DNA_CKPT.read_bytes()[:5000])
    shutil.copy(DNA_CKPT.parents[2] / "model_config.json", bad.parent)
    err = convert_fails(capsys, bad, tmp_path / "out")
    assert "loss.ckpt: truncated or not a PyTorch checkpoint" in err
    assert not (tmp_path / "out" / "config.json").exists()


class Thing:
    """A custom class: its instances pickle by reference to it."""


@pytest.mark.parametrize("content", [b"", b"hello", bytes(range(256)) * 8])
def test_a_file_that_is_no_checkpoint(tmp_path, capsys, content):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(content)
    err = convert_fails(capsys, bad, tmp_path / "out", "--config",
                        str(DNA_CKPT.parents[2] / "model_config.json"))
    assert "x.ckpt: truncated or not a PyTorch checkpoint" in err


@pytest.mark.parametrize("payload, needs", [(Payload(), "getattr"), (print, "print"), (Thing(), "Thing")])
def test_a_pickle_with_a_non_tensor_object_is_refused_unrun(tmp_path, capsys, payload, needs):
    bad = tmp_path / "evil.ckpt"
    torch.save({**weights_only_ckpt(), "callbacks": {"hook": payload}}, bad)
    RAN.clear()
    err = convert_fails(capsys, bad, tmp_path / "out", "--config",
                        str(DNA_CKPT.parents[2] / "model_config.json"))
    assert "evil.ckpt: refused: the pickle needs " in err and needs in err and not RAN


def test_a_prot_weights_file_with_an_object_is_refused(tmp_path, capsys):
    folder = copy_fixture("prot/rope", tmp_path / "prot")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["backbone.extra"] = Payload()
    torch.save(state, folder / "pytorch_model.bin")
    err = convert_fails(capsys, folder, tmp_path / "out")
    assert "pytorch_model.bin: refused" in err and not RAN


def test_a_non_tensor_in_the_state_dict_is_refused(tmp_path, capsys):
    folder = copy_fixture("prot/rope", tmp_path / "prot")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["backbone.step"] = 3
    torch.save(state, folder / "pytorch_model.bin")
    assert "entry 'backbone.step' is a int, not a tensor" in convert_fails(capsys, folder, tmp_path / "o")


@pytest.mark.parametrize("rel, remove, message", [
    ("prot/rope", "config.json", "config.json: no such file (the Prot-xLSTM checkpoint's config)"),
    ("chem/default", "init_arguments.json", "init_arguments.json: no such file"),
    ("chem/default", "model.pt", "model.pt: no such file"),
    ("prot/rope", "pytorch_model.bin", "no model.safetensors or pytorch_model.bin"),
])
def test_a_folder_without_its_config_or_weights(tmp_path, capsys, rel, remove, message):
    folder = copy_fixture(rel, tmp_path / "src")
    (folder / remove).unlink()
    if remove == "pytorch_model.bin":
        err = convert_fails(capsys, folder, tmp_path / "out", "--family", "prot")
    else:
        err = convert_fails(capsys, folder, tmp_path / "out")
    assert message in err


def test_a_dna_checkpoint_without_any_config(tmp_path, capsys):
    bad = tmp_path / "loss.ckpt"
    torch.save(weights_only_ckpt(), bad)
    assert "no model_config.json beside it" in convert_fails(capsys, bad, tmp_path / "out")


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    inner = data["config"] if "config" in data else data
    inner.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("rel, file, changes, message", [
    ("dna/mlstm_causal", "model_config.json",
     {"_target_": "models.caduceus.configuration_caduceus.CaduceusConfig"},
     "builds models.caduceus.configuration_caduceus.CaduceusConfig, not DNA-xLSTM's"),
    ("dna/mlstm_causal", "model_config.json", {"m_backend_bidirectional": True},
     "m_backend_bidirectional=True is not supported"),
    ("dna/mlstm_causal", "model_config.json", {"s_position_embeddings": True},
     "s_position_embeddings=True is not supported"),
    ("dna/mlstm_causal", "model_config.json", {"d_state": 16}, "unknown DNA-xLSTM config field(s)"),
    ("dna/mlstm_causal", "model_config.json", {"max_length": "${dataset.max_length}"},
     "unresolved interpolation"),
    ("prot/rope", "config.json", {"position_embeddings": "abs_2d"}, "'abs_2d' is not supported"),
    ("prot/rope", "config.json", {"ssm_cfg": {}}, "not a Prot-xLSTM xLSTMLMModelConfig"),
    ("chem/default", "init_arguments.json", {"model_class": "<class 'chemxlstm.model.S4forNTP'>"},
     "is not Chem-xLSTM's mLSTM xLSTMModel"),
])
def test_a_config_for_an_unknown_architecture(tmp_path, capsys, rel, file, changes, message):
    folder = copy_fixture(rel, tmp_path / "src")
    edit_json(folder / file, **changes)
    src = folder / "checkpoints/test/loss.ckpt" if rel.startswith("dna") else folder
    assert message in convert_fails(capsys, src, tmp_path / "out")


def test_weights_that_do_not_match_the_config(tmp_path, capsys):
    folder = copy_fixture("prot/rope", tmp_path / "prot")
    edit_json(folder / "config.json", num_blocks=3)
    err = convert_fails(capsys, folder, tmp_path / "out")
    assert "missing key(s): backbone.xlstm_block_stack.blocks.2.xlstm.conv1d.conv.bias" in err


def test_paths_and_outputs_that_cannot_be_used(tmp_path, capsys):
    assert "no such file or directory" in convert_fails(capsys, tmp_path / "nothing", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    assert "not an official" in convert_fails(capsys, tmp_path / "empty", tmp_path / "o")
    folder = copy_fixture("prot/rope", tmp_path / "prot")
    assert "holds the official config.json" in convert_fails(capsys, folder, folder)
    assert "no such config file" in convert_fails(capsys, DNA_CKPT, tmp_path / "o", "--config",
                                                  str(tmp_path / "missing.json"))


def test_captured_hparams_are_plain_data_and_interpolations_stay_text():
    classes = {cls.__qualname__: cls for cls in STAND_INS}

    def node(cls, state):
        obj = classes[cls].__new__(classes[cls])
        obj.__setstate__(state)
        return obj

    gpu = node("AnyNode", {"_val": "${eval:'__import__(\"os\").system(\"nvidia-smi\")'}"})
    tree = node("DictConfig", {"_content": {"train": node("DictConfig", {"_content": {"gpu_mem": gpu}}),
                                            "layers": node("ListConfig", {"_content": [
                                                node("AnyNode", {"_val": 1})]})}})
    assert plain(tree) == {"train": {"gpu_mem": gpu.captured_state["_val"]}, "layers": [1]}
