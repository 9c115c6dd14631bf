"""The Transformer baseline: KV-cache decoding, causality, learning, sizing."""

import pytest
import torch
import torch.nn.functional as F

from bioxlstm.baselines import (
    KVCache,
    TransformerConfig,
    TransformerLanguageModel,
    transformer_like,
)
from bioxlstm.errors import ConfigError


def tiny(**overrides: object) -> TransformerLanguageModel:
    torch.manual_seed(0)
    config = dict(vocab_size=12, d_model=32, num_layers=2, num_heads=4, context_length=64)
    return TransformerLanguageModel(TransformerConfig(**{**config, **overrides})).eval()


@pytest.mark.parametrize("ffn", ["swiglu", "gelu"])
def test_kv_cache_decoding_matches_full_forward(ffn: str) -> None:
    model = tiny(ffn=ffn).double()
    ids = torch.randint(0, 12, (3, 80), generator=torch.Generator().manual_seed(1))
    full = model(ids).logits
    cache = KVCache()
    parts = [model(ids[:, :7], cache=cache).logits, model(ids[:, 7:20], cache=cache).logits]
    parts += [model.step(ids[:, t], cache)[:, None] for t in range(20, 80)]
    assert cache.length == 80 and cache.keys[0].shape[2] == 128  # the buffer grew once
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-10, atol=1e-10)


def test_return_cache_starts_a_cache() -> None:
    model = tiny().double()
    ids = torch.randint(0, 12, (2, 10))
    out = model(ids[:, :6], return_cache=True)
    assert out.cache is not None and out.cache.length == 6
    nxt = model(ids[:, 6:], cache=out.cache).logits
    torch.testing.assert_close(nxt, model(ids).logits[:, 6:], rtol=1e-10, atol=1e-10)


def test_causal() -> None:
    model = tiny().double()
    ids = torch.randint(0, 12, (2, 30), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[:, 20] = (ids[:, 20] + 1) % 12
    before, after = model(ids).logits, model(changed).logits
    torch.testing.assert_close(before[:, :20], after[:, :20], rtol=0, atol=1e-12)
    assert (before[:, 20:] - after[:, 20:]).abs().amax() > 1e-6


def test_loss_decreases_with_adamw() -> None:
    model = tiny().train()
    ids = torch.randint(0, 12, (4, 32), generator=torch.Generator().manual_seed(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model.loss(ids)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_loss_is_shifted_and_ignores_minus_100() -> None:
    model = tiny()
    ids = torch.randint(0, 12, (2, 16))
    logits = model(ids).logits
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 12), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(model.loss(ids), expected)
    labels = ids.clone()
    labels[:, 8:] = -100
    expected = F.cross_entropy(logits[:, :7].reshape(-1, 12), ids[:, 1:8].reshape(-1))
    torch.testing.assert_close(model.loss(ids, labels), expected)
    with pytest.raises(ConfigError, match="clm"):
        model.loss(ids, objective="mlm")


def test_generate_greedy_matches_argmax_of_full_forward() -> None:
    model = tiny().double()
    prompt = torch.randint(0, 12, (2, 5))
    out = model.generate(prompt, max_new_tokens=8, temperature=0.0)
    assert out.shape == (2, 13) and torch.equal(out[:, :5], prompt)
    torch.testing.assert_close(model(out[:, :-1]).logits[:, 4:].argmax(-1), out[:, 5:])
    sampled = model.generate(prompt, 8, top_k=3, generator=torch.Generator().manual_seed(0))
    again = model.generate(prompt, 8, top_k=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sampled, again)
    stopped = model.generate(prompt, 8, stop_token=int(out[0, 6]), temperature=0.0)
    assert stopped.shape[1] <= 13 and (stopped[0, 6:] == out[0, 6]).all()


@pytest.mark.parametrize("n_params", [500_000, 4_000_000, 26_000_000])
def test_transformer_like_matches_parameter_count(n_params: int) -> None:
    config = transformer_like(n_params, vocab_size=12, context_length=1024)
    assert abs(config.num_parameters() / n_params - 1) <= 0.1
    assert config.num_layers >= 2


def test_num_params_formula_matches_built_model() -> None:
    for ffn in ("swiglu", "gelu"):
        config = TransformerConfig(vocab_size=38, d_model=48, num_layers=3, num_heads=4, ffn=ffn)
        assert TransformerLanguageModel(config).num_parameters() == config.num_parameters()


def test_bad_config_is_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match="num_heads"):
        TransformerConfig(vocab_size=12, d_model=30, num_heads=4)
    with pytest.raises(ConfigError, match="ffn"):
        TransformerConfig(vocab_size=12, ffn="relu")


def test_the_trainer_trains_and_checkpoints_the_baseline(tmp_path):
    import json

    from bioxlstm.data.batches import TokenWindows
    from bioxlstm.train import TrainConfig, Trainer

    torch.manual_seed(0)
    model = TransformerLanguageModel(TransformerConfig(vocab_size=12, d_model=32, num_layers=2,
                                                       num_heads=2, context_length=64))
    source = TokenWindows(torch.randint(7, 11, (2000,)), 32, 4)
    Trainer(model, TrainConfig(max_steps=2, batch_size=4, progress=False), source, tmp_path).train()
    assert json.loads((tmp_path / "run.json").read_text())["model_config"]["d_model"] == 32
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()
