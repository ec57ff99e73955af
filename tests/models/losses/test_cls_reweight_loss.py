"""ClsReweightLoss: the detection ReweightLoss's weights on C channels (no background)."""
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS

import mmdeblora  # noqa: F401
from mmdeblora.models.losses import ClsReweightLoss

DEFAULT_SCOPE = 'mmpretrain'  # set around each test by tests/conftest.py


def test_weights_and_loss_by_hand():
    loss = ClsReweightLoss(class_counts=[1, 4, 2], mode='inverse')
    # 1/n = [1, 1/4, 1/2], mean 7/12 -> normalised to mean 1
    want_w = torch.tensor([12 / 7, 3 / 7, 6 / 7])
    assert torch.allclose(torch.tensor(loss.class_weight), want_w)
    g = torch.Generator().manual_seed(0)
    scores, labels = torch.randn(5, 3, generator=g), torch.tensor([0, 1, 2, 1, 0])
    # mmdet's weighted CE: per-sample weight of its class, averaged over the samples
    want = (F.cross_entropy(scores, labels, reduction='none') * want_w[labels]).mean()
    assert loss(scores, labels, avg_factor=5).item() == pytest.approx(want.item(), rel=1e-6)


def test_auto_counts_and_checks():
    loss = MODELS.build(dict(type='ClsReweightLoss', class_counts='auto', num_classes=3))
    with pytest.raises(RuntimeError, match='ClassStatsHook'):
        loss(torch.zeros(2, 3), torch.tensor([0, 1]))
    loss.set_class_counts([5, 5, 10])
    assert len(loss.class_weight) == 3
    with pytest.raises(ValueError, match='4 channels'):
        loss(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match='bg_weight'):
        ClsReweightLoss(class_counts=[1, 2], bg_weight=2.0)
