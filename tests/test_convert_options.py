"""The config options that reproduce the official Bio-xLSTM code: off by default, each doing what
docs/pretrained.md says, and consistent across the full, chunked and one-token paths."""

import pytest
import torch
import torch.nn.functional as F

from bioxlstm import XLSTMLanguageModel, preset
from bioxlstm.alphabets import DNA
from bioxlstm.config import ModelConfig
from bioxlstm.errors import ConfigError
from bioxlstm.layers.blocks import XLSTMBlock, reverse
from bioxlstm.layers.mlstm import mlstm_parallel
from bioxlstm.layers.primitives import rotary
from bioxlstm.layers.variants import inverse_frequencies, rotary_variant

TOL = dict(atol=1e-10, rtol=1e-9)
OFFICIAL_MLSTM = dict(rope=True, rope_pairing="interleaved", rope_scope="inner", rope_before_gates=True,
                      rope_freq_form="reciprocal", mlstm_bias=True, embedding_dropout=False)


def tiny(name, **overrides):
    torch.manual_seed(0)
    model = XLSTMLanguageModel(preset(name, **overrides)).double().eval()
    with torch.no_grad():  # biases start at zero: make them matter
        for key, p in model.named_parameters():
            if "bias" in key:
                p.add_(0.1 * torch.randn_like(p))
    return model


def test_defaults_add_no_parameters_and_keep_the_fused_step():
    for name in ("tiny-mlstm", "tiny-slstm", "tiny-mixed", "tiny-prot-xlstm"):
        config = preset(name)
        assert config.fused_step_compatible and config.masked_token_ids == []
        keys = XLSTMLanguageModel(config).state_dict()
        assert not [k for k in keys if "qkv_bias" in k or k.endswith(("proj_up.bias", "proj_down.bias"))]
    assert not preset("tiny-mlstm", rope=True, rope_pairing="interleaved").fused_step_compatible
    assert not preset("tiny-mlstm", mlstm_bias=True).fused_step_compatible
    assert not preset("tiny-mlstm", rope=True, rope_max_position=100).fused_step_compatible


def test_rope_max_position_clamps_positions():
    x = torch.randint(0, 38, (1, 12))
    clamped = tiny("tiny-prot-xlstm", rope_max_position=5)
    plain = tiny("tiny-prot-xlstm")
    pos = torch.arange(12)[None]
    torch.testing.assert_close(clamped(x, position_ids=pos).logits,
                               plain(x, position_ids=pos.clamp(max=5)).logits, **TOL)


@pytest.mark.parametrize("bad, message", [
    (dict(rope_pairing="pairs"), "rope_pairing"), (dict(rope_scope="all"), "rope_scope"),
    (dict(rope_freq_form="exp"), "rope_freq_form"), (dict(bidirectional_form="x"), "bidirectional_form"),
    (dict(mlstm_bias=1), "mlstm_bias"), (dict(ffn_dim=0), "ffn_dim"), (dict(mlstm_dim=2.5), "mlstm_dim"),
    (dict(masked_token_ids=[12]), "masked_token_ids"), (dict(rcps_slstm_head_flip=True), "rc_equivariant"),
    (dict(source=[1]), "source"), (dict(rope_max_position=-1), "rope_max_position"),
])
def test_bad_option_values_name_their_field(bad, message):
    with pytest.raises(ConfigError, match=message):
        preset("tiny-mlstm", **bad)


def test_rotary_variants():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 8)
    pos = torch.randint(0, 3000, (2, 5))
    assert torch.equal(rotary_variant(x, pos, 5e5), rotary(x, pos, 5e5))
    # interleaved pairs are the half-split rotation of the channels re-ordered (0, 2, 4, 6, 1, 3, 5, 7)
    perm = torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])
    inter = rotary_variant(x, pos, 5e5, pairing="interleaved")
    torch.testing.assert_close(inter[..., perm], rotary(x[..., perm], pos, 5e5))
    # inner scope: head h rotates with band h of a table over all 3 * 8 channels
    inner = rotary_variant(x, pos, 5e5, pairing="interleaved", scope="inner")
    freqs = inverse_frequencies(24, 5e5, "power", x.device).view(3, 4)
    for h in range(3):
        angle = pos[..., None].float() * freqs[h]
        x1, x2 = x[:, h, ..., 0::2], x[:, h, ..., 1::2]
        expected = torch.stack([x1 * angle.cos() - x2 * angle.sin(), x1 * angle.sin() + x2 * angle.cos()], -1)
        torch.testing.assert_close(inner[:, h], expected.flatten(-2))
    power = inverse_frequencies(128, 5e5, "power", x.device)
    recip = inverse_frequencies(128, 5e5, "reciprocal", x.device)
    torch.testing.assert_close(power, recip, rtol=1e-6, atol=0)
    assert not torch.equal(power, recip)  # differ in the last bit, as the two official codes do


@pytest.mark.parametrize("name, options", [
    ("tiny-mlstm", OFFICIAL_MLSTM),
    ("tiny-mlstm", dict(OFFICIAL_MLSTM, rope_max_position=10)),
    ("tiny-mlstm", dict(OFFICIAL_MLSTM, rope_scope="head", rope_before_gates=False, mlstm_dim=128)),
    ("tiny-mixed", dict(mlstm_bias=True, ffn_dim=40, ffn_dropout=False, masked_token_ids=[3])),
])
def test_official_options_agree_in_full_chunked_and_step_paths(name, options):
    model = tiny(name, **options)
    x = torch.randint(0, 12, (2, 21))
    full = model(x).logits
    pieces, state = [], None
    for a, b in [(0, 7), (7, 8), (8, 21)]:
        out = model(x[:, a:b], state=state, return_state=True)
        pieces.append(out.logits)
        state = out.state
    torch.testing.assert_close(torch.cat(pieces, 1), full, **TOL)
    state = model(x[:, :1], return_state=True).state
    steps = [model.step(x[:, t], state) for t in range(1, 21)]
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 1:], **TOL)


def _block_diagonal(proj, c, bias):
    W = proj.weight
    return torch.einsum("bshi,hoi->bsho", c.unflatten(-1, (W.shape[0], W.shape[2])), W).flatten(-2) + bias


def test_mlstm_bias_is_the_biased_projections():
    """Folding the q/k/v biases into the gate biases equals computing the gates from biased q, k, v."""
    layer = tiny("tiny-mlstm", mlstm_bias=True).stack.blocks[0].layer
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    y, _ = layer(x)
    with torch.no_grad():
        x_m, z = F.linear(x, layer.proj_up.weight, layer.proj_up.bias).chunk(2, -1)
        c = F.silu(layer.conv(x_m)[0])
        bq, bk, bv = layer.qkv_bias
        q, k = _block_diagonal(layer.q_proj, c, bq), _block_diagonal(layer.k_proj, c, bk)
        v = _block_diagonal(layer.v_proj, x_m, bv)
        W = torch.cat([layer.igate.weight, layer.fgate.weight])
        gates = F.linear(torch.cat([q, k, v], -1), W, torch.cat([layer.igate.bias, layer.fgate.bias]))
        i, f = gates.transpose(1, 2).split(2, dim=1)
        h = mlstm_parallel(*(t.view(2, 9, 2, -1).transpose(1, 2) for t in (q, k, v)), i, f)
        h = layer.out_norm(h.transpose(1, 2))
        expected = F.linear((h + layer.skip * c) * F.silu(z), layer.proj_down.weight, layer.proj_down.bias)
    torch.testing.assert_close(y, expected, **TOL)


def test_masked_tokens_take_no_probability():
    model = tiny("tiny-mlstm", masked_token_ids=[3, 5]).float()
    x = torch.randint(6, 12, (2, 10))
    logits = model(x).logits
    assert torch.isinf(logits[..., [3, 5]]).all() and torch.isfinite(logits[..., [0, 4, 11]]).all()
    state = model(x, return_state=True).state
    assert torch.isinf(model.step(x[:, 0], state)[:, [3, 5]]).all()  # the fused CPU step too
    out = model.generate(x[:, :2], 30, temperature=2.0, generator=torch.Generator().manual_seed(0))
    assert not torch.isin(out[:, 2:], torch.tensor([3, 5])).any()
    assert torch.isfinite(model.log_likelihood(x)).all()


def test_official_bidirectional_runs_the_whole_block_both_ways():
    config = preset("tiny-mixed", bidirectional=True, bidirectional_form="official")
    torch.manual_seed(0)
    block = XLSTMBlock(config, 1).double().eval()  # an sLSTM block: its FFN runs per direction too
    x = torch.randn(2, 11, 32, dtype=torch.float64)
    lengths = torch.tensor([11, 7])
    both, _ = block(x, bidirectional=True, lengths=lengths)
    fwd, _ = block(x)
    bwd, _ = block(reverse(x, lengths))
    torch.testing.assert_close(both, fwd + reverse(bwd, lengths), **TOL)
    shared, _ = XLSTMBlock(preset("tiny-mixed", bidirectional=True), 1).double().eval()(x, bidirectional=True)
    assert not torch.allclose(both, shared)


def test_rcps_head_flip_breaks_equivariance_only_when_on():
    complement = torch.tensor(DNA.complement_ids())
    x = torch.randint(7, 11, (2, 25))
    for flip in (False, True):
        model = tiny("tiny-slstm", rc_equivariant=True, bidirectional=True, rcps_slstm_head_flip=flip)
        logits = model(x).logits
        rc = model(complement[x].flip(1)).logits
        equivariant = torch.allclose(rc, logits[..., complement].flip(1), atol=1e-9)
        assert equivariant is not flip


def test_width_overrides_set_the_shapes():
    config = ModelConfig(vocab_size=12, d_model=32, num_blocks=2, slstm_at=[1], mlstm_dim=96,
                         mlstm_heads=2, ffn_dim=40)
    shapes = {k: tuple(v.shape) for k, v in XLSTMLanguageModel(config).state_dict().items()}
    assert shapes["stack.blocks.0.layer.proj_up.weight"] == (192, 32)
    assert shapes["stack.blocks.1.ffn.proj_up.weight"] == (80, 32)
