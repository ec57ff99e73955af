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


def test_train_phase_switches_the_robust_loss_and_the_ce_weighting():
    """The official recipe's phases: CE only, then CE weighted by n_c / n_max + DRO-LT."""
    torch.manual_seed(0)
    counts = [40, 10, 2]
    h = MODELS.build(dict(type='DROLTClsHead', num_classes=3, in_channels=4, bank_size=8,
                          dro=False, class_counts='auto'))
    torch.nn.init.normal_(h.fc.weight)  # logits far from uniform: weighting shows
    x, labels = torch.randn(5, 4, requires_grad=True), torch.tensor([2, 0, 1, 0, 2])
    data = [DataSample().set_gt_label(int(y)) for y in labels]
    off = h.loss((x, ), data)
    assert off['loss_dro'].item() == 0 and not off['loss_dro'].requires_grad
    assert off['loss'].item() == pytest.approx(F.cross_entropy(h.fc(x), labels).item(),
                                               rel=1e-6)
    assert h.bank.filled.tolist() == [2, 1, 2]  # filled while off: centroids are ready
    h.set_train_phase(dro=True, ce_weighting='lt')
    with pytest.raises(RuntimeError, match='ClassStatsHook'):
        h.loss((x, ), data)  # 'auto' counts not given yet
    h.set_class_counts(counts)
    on = h.loss((x, ), data)
    w = torch.tensor(counts, dtype=torch.float) / max(counts)
    # nn.CrossEntropyLoss(weight=n_c / n_max): the weighted mean, as the official ce_lt
    assert on['loss'].item() == pytest.approx(
        F.cross_entropy(h.fc(x), labels, weight=w).item(), rel=1e-5)
    assert on['loss'].item() != pytest.approx(off['loss'].item(), rel=1e-3)
    assert on['loss_dro'].item() > 0
    on['loss_dro'].backward()
    assert h.loss_dro.epsilon.grad is not None and x.grad.abs().sum() > 0
    h.set_train_phase(dro=False)  # the classifier phase; ce_weighting kept unless given
    assert (h.dro, h.ce_weighting) == (False, 'lt')
    with pytest.raises(ValueError, match='ce_weighting'):
        h.set_train_phase(ce_weighting='balanced')
    with pytest.raises(TypeError, match='dro'):
        h.set_train_phase(dro=1)
