"""The language model and its stack: state passing, generation, bidirectional mode, padding, init."""

import pytest
import torch

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.config import NOMINAL_PARAMS
from bioxlstm.strands import reverse

TINY = ["tiny-mlstm", "tiny-slstm", "tiny-mixed"]


def tiny(name, **overrides):
    torch.manual_seed(0)
    return XLSTMLanguageModel(preset(name, **overrides)).double().eval()


def ids(B=2, S=40, V=12):
    return torch.randint(0, V, (B, S))


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("form", ["chunkwise", "parallel", "recurrent"])
def test_feeding_in_pieces_equals_one_call(name, form):
    model = tiny(name, mlstm_form=form)
    x = ids()
    full = model(x).logits
    pieces, state = [], None
    for a, b in [(0, 9), (9, 10), (10, 33), (33, 40)]:
        out = model(x[:, a:b], state=state, return_state=True)
        pieces.append(out.logits)
        state = out.state
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-10, rtol=1e-9)
    assert state.position == 40


@pytest.mark.parametrize("name", TINY)
def test_mlstm_forms_give_the_same_model(name):
    x = ids()
    ref = tiny(name, mlstm_form="parallel")(x).logits
    for form in ("chunkwise", "recurrent"):
        torch.testing.assert_close(tiny(name, mlstm_form=form)(x).logits, ref, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("name", TINY)
def test_step_by_step_generation_matches_full_forward(name):
    model = tiny(name)
    prompt = ids(S=6)
    gen = model.generate(prompt, 12, temperature=0.0)
    assert gen.shape == (2, 18) and torch.equal(gen[:, :6], prompt)
    logits = model(gen).logits
    # greedy: every generated token is the argmax of the full forward pass on its prefix
    assert torch.equal(logits[:, 5:-1].argmax(-1), gen[:, 6:])
    out = model(gen[:, :6], return_state=True)
    steps = [out.logits]
    for t in range(6, 18):
        out = model(gen[:, t:t + 1], state=out.state, return_state=True)
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), logits, atol=1e-10, rtol=1e-9)


def test_generation_is_reproducible_with_a_seeded_generator():
    model = tiny("tiny-mixed")
    prompt = ids(S=4)
    a = model.generate(prompt, 20, top_k=5, top_p=0.9, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 20, top_k=5, top_p=0.9, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_suppressed_tokens_are_never_drawn():
    model = tiny("tiny-mlstm")
    gen = model.generate(ids(S=3), 30, suppress_tokens=list(range(7)) + [11],
                         generator=torch.Generator().manual_seed(0))
    assert ((gen[:, 3:] >= 7) & (gen[:, 3:] <= 10)).all()


def test_generation_stops_at_stop_token():
    model = tiny("tiny-mlstm")
    bias_logits = torch.zeros(12)
    bias_logits[3] = 100.0
    model.head.register_forward_hook(lambda m, i, o: o + torch.nn.functional.pad(
        bias_logits, (0, o.shape[-1] - 12)).to(o.dtype))
    gen = model.generate(ids(S=3), 10, stop_token=3)
    assert gen.shape[1] == 4 and (gen[:, 3] == 3).all()


@pytest.mark.parametrize("name", TINY)
def test_bidirectional_equals_direct_computation_on_flipped_input(name):
    bi = tiny(name, bidirectional=True)
    uni = tiny(name)
    uni.load_state_dict(bi.state_dict())
    x = ids()
    h = uni.dropout(uni.embedding(x))
    for block in uni.stack.blocks:
        u = block.norm(h)
        fwd, _ = block.layer(u)
        bwd, _ = block.layer(u.flip(1))
        h = h + fwd + bwd.flip(1)
        if block.kind == "slstm":
            h = h + block.ffn(block.ffn_norm(h))
    expected = uni.head(uni.norm(h))[..., :12]
    torch.testing.assert_close(bi(x).logits, expected, atol=1e-10, rtol=1e-9)
    # and so a bidirectional model commutes with reversing the sequence
    torch.testing.assert_close(bi(x.flip(1)).logits, bi(x).logits.flip(1), atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_equals_unpadded_and_batched_equals_unbatched(bidirectional):
    model = tiny("tiny-mixed", bidirectional=bidirectional)
    a, b = ids(B=1, S=30), ids(B=1, S=19)
    batch = torch.cat([a, torch.nn.functional.pad(b, (0, 11), value=4)], 0)
    lengths = torch.tensor([30, 19])
    emb = model.embed(batch, lengths=lengths)
    torch.testing.assert_close(emb.pooled[0], model.embed(a).pooled[0], atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(emb.pooled[1], model.embed(b).pooled[0], atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(emb.per_token[1, :19], model.embed(b).per_token[0])
    if not bidirectional:
        ll = model.log_likelihood(batch, lengths=lengths)
        torch.testing.assert_close(ll[1], model.log_likelihood(b)[0], atol=1e-10, rtol=1e-9)


def test_reverse_within_lengths():
    x = torch.arange(10).view(2, 5)
    r = reverse(x, torch.tensor([5, 3]))
    assert r.tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]


def test_log_likelihood_matches_loss_and_chunked_scoring():
    model = tiny("tiny-mixed")
    x = ids(B=3, S=50)
    ll = model.log_likelihood(x)
    with torch.no_grad():
        loss = model.loss(x)
    torch.testing.assert_close(-ll.sum() / (3 * 49), loss.double(), atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(model.log_likelihood(x, chunk_tokens=7), ll, atol=1e-10, rtol=1e-9)
    emb = model.embed(x)
    torch.testing.assert_close(model.embed(x, chunk_tokens=16).pooled, emb.pooled)


def test_mlm_loss_uses_only_labelled_positions():
    model = tiny("tiny-mlstm", bidirectional=True)
    x = ids(B=2, S=20)
    labels = torch.full_like(x, -100)
    labels[:, 5] = x[:, 5]
    logits = model(x).logits
    expected = torch.nn.functional.cross_entropy(logits[:, 5], x[:, 5])
    torch.testing.assert_close(model.loss(x, labels, objective="mlm"), expected)


def test_rope_positions_continue_across_state_and_accept_caller_ids():
    model = tiny("tiny-mlstm", rope=True)
    x = ids()
    full = model(x).logits
    out = model(x[:, :15], return_state=True)
    rest = model(x[:, 15:], state=out.state).logits
    torch.testing.assert_close(torch.cat([out.logits, rest], 1), full, atol=1e-10, rtol=1e-9)
    shifted = model(x, position_ids=torch.arange(3, 43).expand(2, 40)).logits
    assert not torch.allclose(shifted, full)


def test_long_input_stays_finite():
    model = XLSTMLanguageModel(preset("tiny-mixed")).eval()
    x = torch.randint(0, 12, (1, 8192))
    assert torch.isfinite(model.log_likelihood(x, chunk_tokens=2048)).all()


def test_initialisation_follows_the_spec():
    config = preset("tiny-mixed", num_blocks=3, slstm_at=[0, 2], mlstm_heads=4, slstm_heads=2)
    model = XLSTMLanguageModel(config)
    mlstm = model.stack.blocks[1].layer
    torch.testing.assert_close(mlstm.fgate.bias.data, torch.linspace(3.0, 6.0, 4))
    assert mlstm.fgate.weight.abs().sum() == 0 and mlstm.igate.weight.abs().sum() == 0
    first, last = model.stack.blocks[0].layer, model.stack.blocks[2].layer
    for layer in (first, last):
        assert layer.bias[1, :, 0].tolist() == [5.0, 5.0]
        torch.testing.assert_close(layer.bias[1, :, -1], torch.full((2,), -7.0))
        assert layer.recurrent.abs().sum() == 0
    assert not torch.allclose(first.bias[1], last.bias[1])
    std = model.embedding.weight.std().item()
    assert abs(std - (2 / (5 * 32)) ** 0.5) < 0.02


@pytest.mark.parametrize("name", sorted(NOMINAL_PARAMS))
def test_preset_parameter_counts_match_their_names(name):
    config = preset(name)
    with torch.device("meta"):
        n = XLSTMLanguageModel(config).num_parameters()
    assert abs(n / NOMINAL_PARAMS[name] - 1) <= 0.15


def test_bad_input_ids_give_clear_errors():
    model = tiny("tiny-mlstm")
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 12\); got values from 1 to 12"):
        model(torch.tensor([[1, 2, 12]]))
    state = model(ids(S=3), return_state=True).state
    with torch.no_grad(), pytest.raises(ValueError, match="got values from -1 to 3"):
        model.step(torch.tensor([3, -1]), state)
    with pytest.raises(ValueError, match="integer tensor"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="bidirectional"):
        tiny("tiny-mlstm", bidirectional=True).generate(ids(S=3), 2)


@pytest.mark.parametrize("name", ["tiny-mixed"])
def test_gradient_checkpointing_gives_the_same_gradients(name):
    model = tiny(name, dropout=0.1).train()
    x = ids()
    torch.manual_seed(3)
    model.loss(x).backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.gradient_checkpointing(True)
    torch.manual_seed(3)
    model.loss(x).backward()
    for p, g in zip(model.parameters(), ref):
        torch.testing.assert_close(p.grad, g, atol=1e-12, rtol=1e-10)
