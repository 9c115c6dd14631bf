"""MLM masking and CLM labels for DNA ids: rates, what may be selected, determinism."""

import pytest
import torch

from bioxlstm.alphabets import DNA
from bioxlstm.data.masking import IGNORE_INDEX, MaskingConfig, clm_labels, is_base, mask_tokens
from bioxlstm.errors import ConfigError

MASK, N, PAD, SEP = (DNA.id(t) for t in ("[MASK]", "N", "[PAD]", "[SEP]"))


def sample_ids(B=64, S=2048, seed=0):
    """Random bases with runs of N, right padding and a few specials, like real batches."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(DNA.id("A"), DNA.id("T") + 1, (B, S), generator=g)
    ids[:, 100:300] = N
    ids[::2, -50:] = PAD
    ids[:, 0] = SEP
    ids[:, 1] = DNA.id("[CLS]")
    return ids


def test_mlm_selects_fifteen_percent_of_each_rows_bases_and_splits_80_10_10():
    ids = sample_ids()
    inputs, labels = mask_tokens(ids, torch.Generator().manual_seed(1))
    selected = labels != IGNORE_INDEX
    bases = is_base(ids)
    assert torch.equal(selected.sum(1), (bases.sum(1) * 0.15).round().long())
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected])

    n = selected.sum().item()
    masked = (inputs[selected] == MASK).sum().item() / n
    changed = (inputs[selected] != ids[selected]) & (inputs[selected] != MASK)
    kept = (inputs[selected] == ids[selected]).sum().item() / n
    assert masked == pytest.approx(0.8, abs=0.01)
    # a random base equals the original one time in four
    assert changed.sum().item() / n == pytest.approx(0.1 * 0.75, abs=0.01)
    assert kept == pytest.approx(0.1 + 0.1 * 0.25, abs=0.01)
    randoms = inputs[selected][inputs[selected] != MASK]
    assert is_base(randoms).all()
    counts = torch.bincount(randoms - DNA.id("A"), minlength=4).float()
    assert (counts / counts.sum()).sub(0.25).abs().max() < 0.03


def test_mlm_never_selects_n_padding_or_specials():
    ids = sample_ids(B=16, S=512)
    for seed in range(5):
        inputs, labels = mask_tokens(ids, torch.Generator().manual_seed(seed))
        selected = labels != IGNORE_INDEX
        assert is_base(ids[selected]).all()
        assert not selected[:, :2].any() and not selected[:, 100:300].any()
        assert torch.equal(inputs[~is_base(ids)], ids[~is_base(ids)])


def test_mlm_is_driven_by_the_generator_only():
    ids = sample_ids(B=4, S=256)
    a = mask_tokens(ids, torch.Generator().manual_seed(3))
    torch.manual_seed(123)
    b = mask_tokens(ids, torch.Generator().manual_seed(3))
    c = mask_tokens(ids, torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], c[1])


def test_every_row_with_a_base_gets_a_target_and_rows_without_get_none():
    ids = torch.full((3, 20), N)
    ids[1, 5] = DNA.id("G")
    ids[2, :] = DNA.id("C")
    _, labels = mask_tokens(ids, torch.Generator().manual_seed(0))
    assert (labels != IGNORE_INDEX).sum(1).tolist() == [0, 1, 3]
    assert labels[1, 5] == DNA.id("G")


def test_masking_rates_follow_the_config():
    ids = sample_ids(B=8, S=1024)
    inputs, labels = mask_tokens(ids, torch.Generator().manual_seed(0),
                                 MaskingConfig(rate=0.5, mask_fraction=1.0, random_fraction=0.0))
    selected = labels != IGNORE_INDEX
    assert torch.equal(selected.sum(1), (is_base(ids).sum(1) * 0.5).round().long())
    assert (inputs[selected] == MASK).all()


@pytest.mark.parametrize("fields", [dict(rate=0.0), dict(rate=1.5), dict(mask_fraction=-0.1),
                                    dict(mask_fraction=0.8, random_fraction=0.3)])
def test_bad_masking_config_is_refused(fields):
    with pytest.raises(ConfigError, match="masking"):
        MaskingConfig(**fields)


def test_clm_labels_ignore_n_padding_and_specials_but_keep_bases_and_sep():
    ids = torch.tensor([[SEP, 7, 8, N, 9, 10, MASK, PAD, PAD]])
    labels = clm_labels(ids)
    X = IGNORE_INDEX
    assert labels.tolist() == [[SEP, 7, 8, X, 9, 10, X, X, X]]
    assert ids[0, 3] == N  # the input is not modified
