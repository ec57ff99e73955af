"""ResLTClsHead: the detection ResLT's branches and loss on C classes (no background)."""
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import mmdeblora  # noqa: F401
from mmdeblora.models.heads import reslt_branch_classes
from mmdeblora.models.roi_heads import ResLTClassifier

DEFAULT_SCOPE = 'mmpretrain'  # set around each test by tests/conftest.py

GROUPS = dict(head=[0], middle=[1], tail=[2, 3])


def build(**kw):
    torch.manual_seed(0)
    h = MODELS.build(dict(type='ResLTClsHead', num_classes=4, in_channels=5, beta=0.8,
                          groups=GROUPS, **kw))
    h.init_weights()
    return h


def test_branch_classes():
    m = reslt_branch_classes(GROUPS, 4)
    assert m.tolist() == [[True] * 4, [False, True, True, True], [False, False, True, True]]
    assert reslt_branch_classes(GROUPS, 4, 5)[:, 4].tolist() == [True, False, False]
    with pytest.raises(ValueError, match='outside'):
        reslt_branch_classes(dict(tail=[4]), 4)


def test_loss_by_hand_and_fused_prediction():
    h = build()
    assert isinstance(h.fc, ResLTClassifier)
    bn_weights = [bn.weight for bn in h.fc.branches]
    assert all(torch.equal(w, torch.ones(5)) for w in bn_weights)  # reset after init_cfg
    h.train()
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 0, 2])
    losses = h.loss((x, ), [DataSample().set_gt_label(int(v)) for v in y])
    zs = [F.linear(bn(x), h.fc.fc.weight, h.fc.fc.bias) for bn in h.fc.branches]
    member = [torch.ones(6, dtype=torch.bool), y >= 1, y >= 2]
    ice = sum(F.cross_entropy(z, y, reduction='none')[m].sum() for z, m in zip(zs, member))
    ice = ice / sum(m.sum() for m in member)
    fce = F.cross_entropy(zs[0] + zs[1] + zs[2], y)
    assert losses['loss'].item() == pytest.approx((0.8 * ice + 0.2 * fce).item(), rel=1e-5)
    h.eval()
    pred = h.predict((x, ))
    fused = sum(F.linear(bn(x), h.fc.fc.weight, h.fc.fc.bias) for bn in h.fc.branches)
    assert [int(p.pred_label) for p in pred] == fused.argmax(1).tolist()


def test_auto_groups_need_the_hook():
    h = MODELS.build(dict(type='ResLTClsHead', num_classes=4, in_channels=5))
    with pytest.raises(RuntimeError, match='ClassStatsHook'):
        h.loss((torch.randn(2, 5), ), [DataSample().set_gt_label(0)] * 2)
    h.set_class_groups(GROUPS)
    assert h.branch_classes[2].tolist() == [False, False, True, True]
