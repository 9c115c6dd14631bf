"""Reverse-complement equivariance: parameter sharing (PS) in the model, post-hoc conjoining (PH)."""

import pytest
import torch
import torch.nn.functional as F

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.rc import conjoined_log_probs, conjoined_pooled
from bioxlstm.strands import DNA_COMPLEMENT as COMPLEMENT
from bioxlstm.strands import reverse, reverse_complement

TINY = ["tiny-mlstm", "tiny-slstm", "tiny-mixed"]
TOL = dict(atol=1e-10, rtol=1e-9)
PAD = 4


def tiny(name, **overrides):
    torch.manual_seed(0)
    return XLSTMLanguageModel(preset(name, **overrides)).double().eval()


def dna(B=2, S=33):
    """Random bases A, C, G, T, N (ids 7..11), so complementing really changes the input."""
    return torch.randint(7, 12, (B, S))


def padded_batch():
    """Two sequences of lengths 33 and 21, right-padded, plus each one alone."""
    a, b = dna(1, 33), dna(1, 21)
    batch = torch.cat([a, F.pad(b, (0, 12), value=PAD)])
    return batch, torch.tensor([33, 21]), [a, b]


def rc_of_output(out, lengths=None):
    """What an RC-equivariant map must give on RC(x), from its output on x: complement, reverse."""
    return reverse(out[..., COMPLEMENT], lengths)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_ps_model_is_rc_equivariant(name, bidirectional):
    model = tiny(name, rc_equivariant=True, bidirectional=bidirectional)
    x = dna()
    logits = model(x).logits
    torch.testing.assert_close(model(reverse_complement(x)).logits, rc_of_output(logits), **TOL)


def test_ps_model_with_rotary_positions_is_rc_equivariant():
    model = tiny("tiny-mlstm", rc_equivariant=True, rope=True)
    batch, lengths, _ = padded_batch()
    logits = model(batch, lengths=lengths).logits
    rc_logits = model(reverse_complement(batch, lengths), lengths=lengths).logits
    expected = rc_of_output(logits, lengths)
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(rc_logits[row, :n], expected[row, :n], **TOL)


def test_non_ps_model_is_not_rc_equivariant():
    for bidirectional in (False, True):
        model = tiny("tiny-mixed", bidirectional=bidirectional)
        x = dna()
        gap = (model(reverse_complement(x)).logits - rc_of_output(model(x).logits)).abs().max()
        assert gap > 1e-3


@pytest.mark.parametrize("name", TINY)
def test_ps_forward_is_the_rcps_construction(name):
    model = tiny(name, rc_equivariant=True)
    x = dna()

    def strand(ids):
        h = model.norm(model.stack(model.embedding(ids))[0])
        return model.head(h)[..., :12]

    expected = strand(x) + strand(reverse_complement(x))[..., COMPLEMENT].flip(1)
    torch.testing.assert_close(model(x).logits, expected, **TOL)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_ps_model_with_padding_is_equivariant_and_ignores_padding(name, bidirectional):
    model = tiny(name, rc_equivariant=True, bidirectional=bidirectional)
    batch, lengths, singles = padded_batch()
    logits = model(batch, lengths=lengths).logits
    rc_logits = model(reverse_complement(batch, lengths), lengths=lengths).logits
    expected = rc_of_output(logits, lengths)
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(rc_logits[row, :n], expected[row, :n], **TOL)
        torch.testing.assert_close(logits[row, :n], model(singles[row]).logits[0], **TOL)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_ps_embeddings_are_rc_aware(bidirectional):
    model = tiny("tiny-mixed", rc_equivariant=True, bidirectional=bidirectional)
    batch, lengths, _ = padded_batch()
    emb = model.embed(batch, lengths=lengths)
    rc = model.embed(reverse_complement(batch, lengths), lengths=lengths)
    assert emb.per_token.shape == (2, 33, model.config.d_model)
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(rc.per_token[row, :n], emb.per_token[row, :n].flip(0), **TOL)
    torch.testing.assert_close(rc.pooled, emb.pooled, **TOL)
    plain = tiny("tiny-mixed", bidirectional=bidirectional)
    gap = (plain.embed(reverse_complement(batch, lengths), lengths=lengths).pooled
           - plain.embed(batch, lengths=lengths).pooled).abs().max()
    assert gap > 1e-3


def test_ps_model_refuses_causal_uses():
    model = tiny("tiny-mixed", rc_equivariant=True)
    x = dna()
    with pytest.raises(ValueError, match="objective='mlm'"):
        model.loss(x)
    with pytest.raises(ValueError, match="cannot generate"):
        model.generate(x[:, :4], 3)
    with pytest.raises(ValueError, match="no state"):
        model(x, return_state=True)
    with pytest.raises(ValueError, match="log_likelihood needs a causal model"):
        model.log_likelihood(x)
    with pytest.raises(ValueError, match="cannot run in pieces"):
        model.embed(x, chunk_tokens=8)


def test_ps_mlm_loss_trains_every_parameter():
    model = tiny("tiny-mixed", rc_equivariant=True, bidirectional=True).train()
    x = dna()
    labels = torch.full_like(x, -100)
    labels[:, ::5] = x[:, ::5]
    loss = model.loss(x, labels, objective="mlm")
    with torch.no_grad():
        expected = F.cross_entropy(model(x).logits[:, ::5].reshape(-1, 12), x[:, ::5].reshape(-1))
    torch.testing.assert_close(loss, expected, **TOL)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_ps_preset_override_and_checkpoint_round_trip(tmp_path):
    config = preset("dna-xlstm-500k", rc_equivariant=True, num_blocks=2, slstm_at=[1])
    assert config.rc_equivariant
    torch.manual_seed(0)
    model = XLSTMLanguageModel(config).eval()
    model.save_pretrained(tmp_path / "ps")
    loaded = XLSTMLanguageModel.from_pretrained(tmp_path / "ps")
    assert loaded.config.rc_equivariant
    x = dna()
    torch.testing.assert_close(loaded(x).logits, model(x).logits, atol=0, rtol=0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_conjoined_log_probs_are_rc_equivariant_for_a_plain_model(bidirectional):
    model = tiny("tiny-mixed", bidirectional=bidirectional)
    batch, lengths, singles = padded_batch()
    logp = conjoined_log_probs(model, batch, lengths)
    rc = conjoined_log_probs(model, reverse_complement(batch, lengths), lengths)
    expected = rc_of_output(logp, lengths)
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(rc[row, :n], expected[row, :n], **TOL)
        torch.testing.assert_close(logp[row, :n], conjoined_log_probs(model, singles[row])[0], **TOL)
    torch.testing.assert_close(logp.logsumexp(-1), torch.zeros(2, 33, dtype=logp.dtype), **TOL)


def test_conjoined_log_probs_average_both_strands_as_probabilities():
    model = tiny("tiny-mlstm", bidirectional=True)
    x = dna()
    p_fwd = model(x).logits.softmax(-1)
    p_rc = model(reverse_complement(x)).logits.softmax(-1)[..., COMPLEMENT].flip(1)
    expected = ((p_fwd + p_rc) / 2).log()
    torch.testing.assert_close(conjoined_log_probs(model, x), expected, **TOL)


def test_conjoined_pooled_is_rc_invariant_for_a_plain_model():
    model = tiny("tiny-mixed")
    batch, lengths, _ = padded_batch()

    def pooled(ids, n):
        return model.embed(ids, lengths=n).pooled

    out = conjoined_pooled(pooled, batch, lengths)
    rc_batch = reverse_complement(batch, lengths)
    torch.testing.assert_close(conjoined_pooled(pooled, rc_batch, lengths), out, **TOL)
    expected = (pooled(batch, lengths) + pooled(rc_batch, lengths)) / 2
    torch.testing.assert_close(out, expected, **TOL)
    assert (pooled(batch, lengths) - out).abs().max() > 1e-4


def test_conjoining_needs_a_dna_vocabulary():
    model = XLSTMLanguageModel(preset("tiny-mlstm", alphabet="protein", vocab_size=38))
    with pytest.raises(ValueError, match="DNA model with 12 tokens"):
        conjoined_log_probs(model, dna())
