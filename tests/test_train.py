"""The training loop: it learns, resumes exactly, schedules, groups, accumulates and records."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.data.batches import BatchSource, TokenWindows, eval_batches
from bioxlstm.errors import ConfigError
from bioxlstm.train import (
    TrainConfig,
    Trainer,
    bf16_is_slow,
    build_scheduler,
    dropout_seed,
    global_target_count,
    lr_multiplier,
    parameter_groups,
    train_on_tokens,
)


class FixedBatches:
    """A batch source cycling through given batches (a fixed batch when given one)."""

    def __init__(self, *batches: torch.Tensor) -> None:
        self.batches, self.drawn = batches, 0

    def next_batch(self) -> dict[str, torch.Tensor]:
        self.drawn += 1
        return {"input_ids": self.batches[(self.drawn - 1) % len(self.batches)]}

    def state_dict(self) -> dict[str, int]:
        return {"drawn": self.drawn}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.drawn = state["drawn"]


class Interrupted(Exception):
    pass


class CrashAfter:
    """Wraps a source and raises after `limit` batches, as a killed job would stop."""

    def __init__(self, source: BatchSource, limit: int) -> None:
        self.source, self.limit = source, limit

    def next_batch(self) -> dict[str, torch.Tensor]:
        self.limit -= 1
        if self.limit < 0:
            raise Interrupted
        return self.source.next_batch()

    def state_dict(self) -> dict:
        return self.source.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.source.load_state_dict(state)


def tiny_model(seed: int = 0, **overrides) -> XLSTMLanguageModel:
    torch.manual_seed(seed)
    return XLSTMLanguageModel(preset("tiny-mlstm", **overrides))


def config(**fields) -> TrainConfig:
    return TrainConfig(**{"device": "cpu", "progress": False, "log_every": 1, **fields})


def tokens(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 12, (n,), generator=torch.Generator().manual_seed(seed))


def test_tiny_model_overfits_a_fixed_batch(tmp_path):
    batch = tokens(4 * 32).view(4, 32)
    model = tiny_model()
    assert model.loss(batch).item() > 2.0
    cfg = config(lr=1e-2, max_steps=30, schedule="constant", weight_decay=0.0, log_every=10)
    Trainer(model, cfg, FixedBatches(batch), tmp_path).train()
    assert model.loss(batch).item() < 0.1


def test_resumed_run_matches_uninterrupted_run_bit_for_bit(tmp_path):
    cfg = config(lr=3e-3, max_steps=6, warmup_steps=2, min_lr=1e-4, grad_accum_steps=2,
                 batch_size=2, save_every=3, eval_every=3, eval_batches=2)
    stream, valid = tokens(2_000), list(eval_batches(tokens(500, seed=1), 32, 2))
    straight = tiny_model(dropout=0.1)
    Trainer(straight, cfg, TokenWindows(stream, 32, 2, seed=5), tmp_path / "a", valid).train()

    crashing = CrashAfter(TokenWindows(stream, 32, 2, seed=5), limit=2 * 4 + 1)
    with pytest.raises(Interrupted):
        Trainer(tiny_model(dropout=0.1), cfg, crashing, tmp_path / "b", valid).train()
    resumed = tiny_model(seed=99, dropout=0.1)
    trainer = Trainer(resumed, cfg, TokenWindows(stream, 32, 2, seed=5), tmp_path / "b", valid,
                      resume=True)
    assert trainer.step == 3
    trainer.train()

    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "b/metrics.jsonl").open()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert json.loads((tmp_path / "b/run.json").read_text())["resumed_at_steps"] == [3]


def test_resume_without_a_checkpoint_starts_the_run_and_fresh_runs_refuse_a_used_dir(tmp_path, capsys):
    cfg = config(max_steps=2)
    batches = FixedBatches(tokens(64).view(2, 32))
    trainer = Trainer(tiny_model(), cfg, batches, tmp_path / "new", resume=True)
    assert trainer.step == 0 and "no complete checkpoint yet: starting the run at step 0" in \
        capsys.readouterr().err
    trainer.train()
    with pytest.raises(ConfigError, match="already holds a run .last checkpoint at step 2.; resume it"):
        Trainer(tiny_model(), cfg, batches, tmp_path / "new")
    with pytest.raises(ConfigError, match="max_steps is 1 but the run is already at step 2"):
        Trainer(tiny_model(), config(max_steps=1), batches, tmp_path / "new", resume=True).train()


def test_resume_refuses_other_settings_but_may_extend_the_run(tmp_path):
    batches = FixedBatches(tokens(64).view(2, 32))
    Trainer(tiny_model(), config(max_steps=2), batches, tmp_path).train()
    with pytest.raises(ConfigError, match=r"lr \(run: 0.001, now: 0.1\); seed \(run: 0, now: 9\)"):
        Trainer(tiny_model(), config(max_steps=3, lr=0.1, seed=9), batches, tmp_path, resume=True)
    with pytest.raises(ConfigError, match=r"model d_model \(run: 32, now: 64\)"):
        Trainer(tiny_model(d_model=64), config(max_steps=3), batches, tmp_path, resume=True)
    trainer = Trainer(tiny_model(), config(max_steps=3, save_every=1, log_every=1), batches, tmp_path,
                      resume=True)
    trainer.train()
    info = json.loads((tmp_path / "run.json").read_text())
    assert trainer.step == 3 and info["train_config"]["max_steps"] == 3
    assert info["train_config"]["save_every"] == 1 and info["resumed_at_steps"] == [2]


def test_a_checkpoint_is_saved_every_few_minutes_without_a_step_interval(tmp_path, monkeypatch):
    from bioxlstm import train

    clock = [0.0]
    monkeypatch.setattr(train.time, "monotonic", lambda: clock[0])

    class Ticking(FixedBatches):
        def next_batch(self):
            clock[0] += 60.0  # each step takes a minute
            return super().next_batch()

    cfg = config(max_steps=9, save_every_minutes=4)
    crashing = CrashAfter(Ticking(tokens(64).view(2, 32)), limit=7)
    with pytest.raises(Interrupted):
        Trainer(tiny_model(), cfg, crashing, tmp_path).train()
    state = json.loads((tmp_path / "checkpoint" / "training_state.json").read_text())
    assert state["step"] == 4  # saved once 4 minutes had passed; the crash came at step 8
    assert TrainConfig().save_every_minutes == 10 and TrainConfig().save_every == 0


def lrs(cfg: TrainConfig) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler = build_scheduler(optimizer, cfg)
    seen = []
    for _ in range(cfg.max_steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_cosine_schedule_warms_up_then_decays_to_min_lr():
    seen = lrs(config(lr=1.0, min_lr=0.1, warmup_steps=4, max_steps=20))
    assert seen[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a > b for a, b in zip(seen[3:], seen[4:]))
    assert seen[-1] == pytest.approx(0.1)
    assert seen[11] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 8 / 16)))


def test_constant_schedule_holds_lr_after_warmup_fraction():
    cfg = config(lr=2.0, schedule="constant", warmup_fraction=0.25, max_steps=12)
    assert cfg.warmup == 3
    assert lrs(cfg) == pytest.approx([2 / 3, 4 / 3] + [2.0] * 10)
    assert lr_multiplier(cfg, 1_000) == 1.0


def test_decay_groups_exclude_biases_norms_and_embeddings():
    model = tiny_model()
    decay, no_decay = parameter_groups(model, 0.1)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    ids = {id(p) for p in no_decay["params"]}
    names = {name: id(p) in ids for name, p in model.named_parameters()}
    assert names["embedding.weight"] and names["norm.weight"]
    assert names["stack.blocks.0.layer.igate.bias"] and names["stack.blocks.0.norm.weight"]
    assert not names["head.weight"] and not names["stack.blocks.0.layer.proj_up.weight"]
    assert all(p.dim() >= 2 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_two_accumulated_half_batches_equal_one_full_batch(tmp_path):
    batch = tokens(4 * 32).view(4, 32)
    full, halves = tiny_model(), tiny_model()
    runs = [(full, config(clip_norm=None, max_steps=1), FixedBatches(batch)),
            (halves, config(clip_norm=None, max_steps=1, grad_accum_steps=2),
             FixedBatches(batch[:2], batch[2:]))]
    losses = []
    for (model, cfg, source), run_dir in zip(runs, ("full", "halves")):
        trainer = Trainer(model, cfg, source, tmp_path / run_dir)
        losses.append(trainer.train()["loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for (name, a), b in zip(full.named_parameters(), halves.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("avx512_bf16, amx, slow", [(False, False, True), (True, False, False),
                                                    (False, True, False)])
def test_bf16_is_slow_only_on_cpus_without_bfloat16_instructions(monkeypatch, avx512_bf16, amx,
                                                                 slow):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert bf16_is_slow(torch.device("cpu")) is slow
    assert bf16_is_slow(torch.device("meta")) is False


@pytest.mark.parametrize("bf16", [True, False])
def test_trainer_warns_when_bf16_would_be_emulated(monkeypatch, tmp_path, bf16):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    batches = FixedBatches(tokens(64).view(2, 32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(tiny_model(), config(bf16=bf16), batches, tmp_path)
    messages = [str(w.message) for w in caught if "bfloat16 instructions" in str(w.message)]
    assert len(messages) == int(bf16)


def test_metrics_run_info_and_checkpoint_are_written(tmp_path):
    model = tiny_model()
    cfg = config(max_steps=4, eval_every=2, eval_batches=3, log_every=3, batch_size=2, bf16=True)
    train_on_tokens(model, cfg, tokens(1_000), 32, tmp_path, valid_tokens=tokens(400, seed=2))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [2, 3, 4]
    assert all({"loss", "lr", "tokens_per_s"} <= r.keys() for r in records)
    assert all(math.isfinite(r["loss"]) and r["tokens_per_s"] > 0 for r in records)
    assert ["valid_loss" in r for r in records] == [True, False, True]
    assert records[0]["valid_ppl"] == pytest.approx(math.exp(records[0]["valid_loss"]))
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["train_config"] == cfg.to_dict()
    assert info["model_config"] == model.config.to_dict()
    assert info["seed"] == 0 and {"python", "torch", "bioxlstm"} <= info["versions"].keys()
    loaded = XLSTMLanguageModel.from_pretrained(tmp_path / "checkpoint")
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock")
    assert names == ["checkpoint", "metrics.jsonl", "run.json"]


@pytest.mark.parametrize("field, value", [
    ("lr", -1.0), ("min_lr", 5.0), ("betas", (0.9,)), ("weight_decay", -0.1),
    ("schedule", "linear"), ("max_steps", 0), ("grad_accum_steps", 1.5), ("clip_norm", 0),
    ("warmup_fraction", 1.5), ("warmup_steps", 5_000), ("bf16", "yes"), ("device", "gpu0"),
    ("seed", -1),
])
def test_bad_train_config_fields_are_named(field, value):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        TrainConfig(**{field: value})


def test_train_config_round_trips_and_rejects_unknown_fields(tmp_path):
    cfg = config(lr=6e-4, warmup_steps=500, max_steps=10_000)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    (tmp_path / "run.yaml").write_text("train:\n  lr: 0.0006\n  betas: [0.9, 0.99]\n")
    assert TrainConfig.from_file(tmp_path / "run.yaml").betas == (0.9, 0.99)
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 1e-3})


def test_token_windows_resume_their_stream_and_eval_batches_cover_in_order():
    source = TokenWindows(tokens(500), 16, 3, seed=1)
    source.next_batch()
    state = source.state_dict()
    expected = [source.next_batch()["input_ids"] for _ in range(3)]
    again = TokenWindows(tokens(500), 16, 3, seed=7)
    again.load_state_dict(state)
    assert all(torch.equal(e, again.next_batch()["input_ids"]) for e in expected)
    assert not torch.equal(expected[0], expected[1])
    stream = tokens(100)
    blocks = [b["input_ids"] for b in eval_batches(stream, 16, 4)]
    assert [tuple(b.shape) for b in blocks] == [(4, 16), (2, 16)]
    assert torch.equal(torch.cat(blocks).flatten(), stream[:96])
    assert len(list(eval_batches(stream, 16, 1, max_batches=2))) == 2
    with pytest.raises(ConfigError, match="seq_len"):
        TokenWindows(stream, 0, 2)


class PoisonedModel(torch.nn.Module):
    """A one-parameter model whose loss is NaN on the batches marked poisoned."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def loss(self, input_ids: torch.Tensor, poisoned: bool = False, reduction: str = "mean"
             ) -> torch.Tensor:
        loss = ((self.w - input_ids.float().mean()) ** 2).sum()
        if reduction == "sum":  # as if every next-token target scored this loss
            loss = loss * input_ids[:, 1:].numel()
        return loss * float("nan") if poisoned else loss

    def save_pretrained(self, directory) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        save_file({"w": self.w.detach()}, str(directory / "model.safetensors"))


class Marked(FixedBatches):
    """FixedBatches whose batch numbers (1-based) in `poisoned` carry the poison flag."""

    def __init__(self, poisoned: set[int]) -> None:
        super().__init__(torch.zeros(1, 4, dtype=torch.long))
        self.poisoned = poisoned

    def next_batch(self) -> dict:
        batch = super().next_batch()
        return {**batch, "poisoned": self.drawn in self.poisoned}


def test_non_finite_steps_are_skipped_with_a_record(tmp_path, capsys):
    config = TrainConfig(lr=0.1, max_steps=4, batch_size=1, progress=False, clip_norm=None,
                         weight_decay=0.0)
    clean = Trainer(PoisonedModel(), config, Marked(set()), tmp_path / "clean")
    clean.train()
    trainer = Trainer(PoisonedModel(), config, Marked({2, 3}), tmp_path / "poisoned")
    trainer.train()
    # the two poisoned batches changed nothing: four good steps land where the clean run does
    assert trainer.step == 4 and torch.equal(trainer.model.w, clean.model.w)
    assert "step skipped (2 in a row)" in capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "poisoned/metrics.jsonl").read_text().splitlines()]
    assert sum("skipped" in r for r in records) == 2


def test_too_many_non_finite_steps_in_a_row_stop_the_run(tmp_path):
    from bioxlstm.train import NonFiniteLossError

    config = TrainConfig(max_steps=10, batch_size=1, progress=False, max_bad_steps=3)
    trainer = Trainer(PoisonedModel(), config, Marked({2, 3, 4, 5}), tmp_path / "r")
    with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        trainer.train()
    assert trainer.step == 1
    with pytest.raises(ConfigError, match="max_bad_steps"):
        TrainConfig(max_bad_steps=0)


def test_record_positions_restart_at_every_separator_and_follow_windows():
    from bioxlstm.data.batches import record_positions

    tokens = torch.tensor([0, 5, 6, 7, 0, 8, 9, 0, 4])
    assert record_positions(tokens, 0).tolist() == [0, 1, 2, 3, 0, 1, 2, 0, 1]
    assert record_positions(torch.tensor([5, 6, 0, 7]), 0).tolist() == [1, 2, 0, 1]
    positions = record_positions(tokens, 0)
    batch = TokenWindows(tokens, 4, 3, seed=1, positions=positions).next_batch()
    for ids, pos in zip(batch["input_ids"], batch["position_ids"]):
        start = next(j for j in range(len(tokens) - 3) if torch.equal(tokens[j:j + 4], ids))
        assert torch.equal(pos, positions[start:start + 4])
    evaluated = list(eval_batches(tokens, 4, 2, positions=positions))
    assert evaluated[0]["position_ids"].tolist() == [[0, 1, 2, 3], [0, 1, 2, 0]]
    with pytest.raises(ConfigError, match="one position id per token"):
        TokenWindows(tokens, 4, 3, positions=positions[:-1])


def test_protein_fasta_pretraining_feeds_per_record_positions(tmp_path):
    from bioxlstm.tasks.pretrain import pretrain_fasta

    fasta = tmp_path / "prot.fa"
    fasta.write_text("".join(f">p{j}\nMKLVAGHWCDE{'A' * j}\n" for j in range(30)))
    config = TrainConfig(max_steps=1, batch_size=2, progress=False, eval_every=1, eval_batches=1)
    trainer = pretrain_fasta(fasta, preset("tiny-prot-xlstm"), config, tmp_path / "run", 32)
    batch = trainer.train_data.next_batch()
    ids, pos = batch["input_ids"], batch["position_ids"]
    assert ((pos == 0) == (ids == 0)).all()  # <cls> (id 0) and only <cls> sits at position 0


def test_the_last_n_checkpoints_are_kept_as_loadable_models(tmp_path):
    tokens = torch.randint(7, 11, (3000,))
    config = TrainConfig(max_steps=8, batch_size=2, save_every=2, keep_checkpoints=3, progress=False)
    torch.manual_seed(0)
    trainer = Trainer(XLSTMLanguageModel(preset("tiny-mlstm")), config,
                      TokenWindows(tokens, 32, 2), tmp_path / "run")
    trainer.train()
    history = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert history == ["step-00000004", "step-00000006"]
    assert json.loads((tmp_path / "run/checkpoint/training_state.json").read_text())["step"] == 8
    older = XLSTMLanguageModel.from_pretrained(tmp_path / "run/checkpoints/step-00000006")
    assert not all(torch.equal(a, b) for a, b in zip(older.parameters(), trainer.model.parameters()))
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        TrainConfig(keep_checkpoints=0)


def test_dna_fasta_pretraining_never_targets_n(tmp_path):
    from bioxlstm.alphabets import DNA
    from bioxlstm.tasks.pretrain import pretrain_fasta

    fasta = tmp_path / "dna.fa"
    fasta.write_text("".join(f">r{j}\nACGTNNACGGTRYACGT{'A' * j}\n" for j in range(40)))
    config = TrainConfig(max_steps=1, batch_size=4, progress=False, eval_every=1, eval_batches=1)
    trainer = pretrain_fasta(fasta, preset("tiny-mlstm"), config, tmp_path / "run", 32)
    batch = trainer.train_data.next_batch()
    is_n = batch["input_ids"] == DNA.id("N")
    assert is_n.any() and (batch["labels"][is_n] == -100).all()
    assert torch.equal(batch["labels"][~is_n], batch["input_ids"][~is_n])
    valid = next(iter(trainer.valid_data()))
    assert (valid["labels"][valid["input_ids"] == DNA.id("N")] == -100).all()


def test_tensorboard_receives_the_logged_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tokens = torch.randint(7, 11, (2000,))
    config = TrainConfig(max_steps=4, batch_size=2, log_every=2, eval_every=2, eval_batches=1,
                         tensorboard=True, progress=False)
    train_on_tokens(XLSTMLanguageModel(preset("tiny-mlstm")), config, tokens[:1500], 32,
                    tmp_path / "run", valid_tokens=tokens[1500:])
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [r["step"] for r in records]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in records])
    assert len(events.Scalars("valid_loss")) == 2


def test_dropout_seeds_differ_by_rank_step_and_micro_batch():
    seeds = {dropout_seed(0, step, micro, rank)
             for step in range(3) for micro in range(2) for rank in range(4)}
    assert len(seeds) == 24 and dropout_seed(0, 1, 0, 1) == dropout_seed(0, 1, 0, 1)
    assert dropout_seed(0, 1, 0, 1) != dropout_seed(1, 1, 0, 1)


def test_loss_weighs_every_target_the_same_across_uneven_rows():
    batch = {"input_ids": torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]]),
             "labels": torch.tensor([[1, 2, -100, -100], [5, 6, 7, 8]]), "objective": "clm"}
    assert global_target_count(batch) == 4
    assert global_target_count({**batch, "objective": "mlm"}) == 6
