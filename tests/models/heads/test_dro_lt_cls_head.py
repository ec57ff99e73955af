"""DROLTClsHead: CE plus DRO-LT on the head's input features with bank centroids."""
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import mmdeblora  # noqa: F401

DEFAULT_SCOPE = 'mmpretrain'  # set around each test by tests/conftest.py


def test_loss_is_ce_plus_dro_on_bank_centroids():
    torch.manual_seed(0)
    h = MODELS.build(dict(type='DROLTClsHead', num_classes=3, in_channels=4, bank_size=8,
                          loss_dro=dict(temperature=1.0, loss_weight=0.5)))
    h.init_weights()
    old = torch.randn(6, 4)
    h.bank.update(old, torch.tensor([0, 0, 1, 1, 2, 2]))
    x, labels = torch.randn(3, 4, requires_grad=True), torch.tensor([2, 0, 2])
    losses = h.loss((x, ), [DataSample().set_gt_label(int(y)) for y in labels])
    assert losses['loss'].item() == pytest.approx(
        F.cross_entropy(h.fc(x), labels).item(), rel=1e-6)
    # centroids: the bank after this batch went in (every batch class has one)
    cents = torch.stack([torch.cat([old[0:2], x[1:2]]).mean(0), old[2:4].mean(0),
                         torch.cat([old[4:6], x[0:1], x[2:3]]).mean(0)]).detach()
    want = h.loss_dro(x, labels, cents)
    assert losses['loss_dro'].item() == pytest.approx(want.item(), rel=1e-5)
    losses['loss_dro'].backward()
    assert x.grad.abs().sum() > 0 and h.loss_dro.epsilon.grad is not None
    with pytest.raises(ValueError, match='classes'):
        MODELS.build(dict(type='DROLTClsHead', num_classes=3, in_channels=4,
                          loss_dro=dict(num_classes=4)))
