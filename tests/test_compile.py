"""`compile: true` runs the training loss through torch.compile: the same run, within rounding."""

from __future__ import annotations

import json

import pytest
import torch

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.data.batches import TokenWindows
from bioxlstm.errors import ConfigError
from bioxlstm.train import TrainConfig, Trainer


def _run(tmp_path, name: str, compile: bool, max_steps: int = 3, resume: bool = False):
    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset("tiny-mlstm"))
    stream = torch.randint(0, 12, (4_000,), generator=torch.Generator().manual_seed(1))
    config = TrainConfig(lr=3e-3, max_steps=max_steps, batch_size=2, log_every=1, progress=False,
                         save_every_minutes=0, device="cpu", compile=compile)
    trainer = Trainer(model, config, TokenWindows(stream, 64, 2, seed=3), tmp_path / name,
                      resume=resume)
    trainer.train()
    losses = [json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").open()]
    return trainer, model, losses


def test_compiled_training_matches_the_eager_run(tmp_path):
    torch._dynamo.reset()
    _, eager, eager_losses = _run(tmp_path, "eager", compile=False)
    trainer, compiled, compiled_losses = _run(tmp_path, "compiled", compile=True)
    assert trainer.loss_net is not trainer.net  # the training call went through torch.compile
    assert len(compiled_losses) == len(eager_losses) == 3
    for got, want in zip(compiled_losses, eager_losses):
        assert got == pytest.approx(want, rel=1e-4)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        # AdamW divides each gradient by its running RMS, so where a gradient is near zero its
        # rounding can move the weight by up to lr per step: a third of lr bounds three steps here
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-3, msg=name)


def test_compile_may_change_on_resume_and_must_be_a_bool(tmp_path):
    _run(tmp_path, "run", compile=False, max_steps=2)
    trainer, _, losses = _run(tmp_path, "run", compile=True, max_steps=3, resume=True)
    assert trainer.step == 3 and len(losses) == 3
    with pytest.raises(ConfigError, match="'compile' must be true or false"):
        TrainConfig(compile="yes")
    assert TrainConfig.from_dict({"compile": True}).compile is True
