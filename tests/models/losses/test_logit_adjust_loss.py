"""LogitAdjustLoss: cross-entropy on logits + tau * log(prior) (Menon et al., loss variant)."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS

import mmdeblora  # noqa: F401
from mmdeblora.models.losses import LogitAdjustLoss

DEFAULT_SCOPE = 'mmpretrain'  # set around each test by tests/conftest.py


@pytest.mark.parametrize('tau', [1.0, 0.5, 0.0])
def test_equals_ce_on_adjusted_logits(tau):
    counts = [10, 30, 60]
    loss = LogitAdjustLoss(class_counts=counts, tau=tau)
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 3, generator=g), torch.tensor([0, 1, 2, 2, 1, 0])
    prior = torch.tensor([0.1, 0.3, 0.6])
    want = F.cross_entropy(logits + tau * prior.log(), labels)
    assert loss(logits, labels, avg_factor=6).item() == pytest.approx(want.item(), rel=1e-5)
    if tau == 0:
        assert loss(logits, labels).item() == pytest.approx(
            F.cross_entropy(logits, labels).item(), rel=1e-6)


def test_rare_class_pushed_by_the_prior():
    """A rare class's target gets a lower adjusted logit, so equal raw logits cost more."""
    loss = LogitAdjustLoss(class_counts=[1, 99])
    logits = torch.zeros(2, 2)
    rare, common = (loss(logits, torch.tensor([c] * 2)).item() for c in (0, 1))
    assert rare == pytest.approx(-math.log(0.01), rel=1e-4)
    assert common == pytest.approx(-math.log(0.99), rel=1e-4)


def test_empty_class_and_auto():
    loss = MODELS.build(dict(type='LogitAdjustLoss', class_counts='auto', num_classes=3))
    with pytest.raises(RuntimeError, match='ClassStatsHook'):
        loss(torch.zeros(1, 3), torch.tensor([0]))
    loss.set_class_counts([0, 5, 5])  # official code: log(pi^tau + 1e-12), finite
    assert loss.adjustment[0].item() == pytest.approx(math.log(1e-12), rel=1e-5)
    assert torch.isfinite(loss(torch.zeros(2, 3), torch.tensor([1, 2])))
    with pytest.raises(ValueError, match='2 channels'):
        loss(torch.zeros(1, 2), torch.tensor([0]))
