"""ReweightLoss: class weights per mode against hand-computed values, and its loss."""
import math

import pytest
import torch
from mmrotate.registry import MODELS

from mmdeblora.models.losses import ReweightLoss, reweight_class_weights
from tests.models.toy_head import toy_bbox_head

COUNTS = [1, 4, 0, 16]  # a class without instances in third place


def test_inverse_weights():
    # 1/n for n = 1, 4, 16 -> 1, 0.25, 0.0625; mean 0.4375; the empty class gets the max
    w = reweight_class_weights(COUNTS, 'inverse', bg_weight=0.5)
    m = (1 + 0.25 + 0.0625) / 3
    assert w == pytest.approx([1 / m, 0.25 / m, 1 / m, 0.0625 / m, 0.5])


def test_sqrt_inverse_weights():
    w = reweight_class_weights(COUNTS, 'sqrt_inverse')
    m = (1 + 0.5 + 0.25) / 3
    assert w == pytest.approx([1 / m, 0.5 / m, 1 / m, 0.25 / m, 1.0])


def test_effective_number_weights():
    # (1 - b) / (1 - b^n), b = 0.5: n=1 -> 1, n=4 -> 0.5/0.9375, n=16 -> 0.5/(1-2^-16)
    e = [1.0, 0.5 / 0.9375, 0.5 / (1 - 2 ** -16)]
    m = sum(e) / 3
    w = reweight_class_weights(COUNTS, 'effective_number', beta=0.5)
    assert w == pytest.approx([e[0] / m, e[1] / m, e[0] / m, e[2] / m, 1.0])
    # beta -> 0 gives plain cross-entropy weights
    assert reweight_class_weights(COUNTS, 'effective_number', beta=0.0) == \
        pytest.approx([1.0] * 5)


def test_bad_input():
    with pytest.raises(ValueError, match='mode'):
        reweight_class_weights(COUNTS, 'log')
    with pytest.raises(ValueError, match='zero'):
        reweight_class_weights([0, 0], 'inverse')
    with pytest.raises(ValueError, match='beta'):
        reweight_class_weights(COUNTS, 'effective_number', beta=1.0)
    with pytest.raises(RuntimeError, match='ClassStatsHook'):
        ReweightLoss()(torch.zeros(2, 5), torch.tensor([0, 4]))


def test_loss_value_and_accuracy_in_the_bbox_head():
    """Inside mmdet's bbox head: sum_i w_{y_i} CE_i / #RoIs, and the usual 'acc'."""
    head = toy_bbox_head(loss_cls=dict(type='ReweightLoss', class_counts=[1, 3],
                                       mode='inverse'))
    # weights: 1/1, 1/3 normalised to mean 1 -> 1.5, 0.5; background 1
    scores = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 1, 2])
    ce = [math.log(math.e ** 2 + 2) - 2, math.log(math.e + 2) - 1,
          math.log(math.e ** 3 + 2) - 3]
    expected = (1.5 * ce[0] + 0.5 * ce[1] + 1.0 * ce[2]) / 3
    losses = head.loss(scores, None, None, labels, torch.ones(3), None, None)
    assert losses['loss_cls'].item() == pytest.approx(expected, rel=1e-5)
    assert losses['acc'].item() == pytest.approx(100.0)


def test_auto_counts_set_later():
    loss = MODELS.build(dict(type='ReweightLoss', num_classes=2, mode='sqrt_inverse'))
    with pytest.raises(ValueError, match='2 classes'):
        loss.set_class_counts([1, 2, 3])
    loss.set_class_counts([1, 4])
    assert loss.class_weight == pytest.approx([4 / 3, 2 / 3, 1.0])


def test_refused_outside_an_roi_bbox_head(tmp_path):
    """issue 20: in a one-stage head (rotated RetinaNet) ReweightLoss trained at loss_cls
    ~3250 without a word. Only an RoI bbox head asks for its channels: the weight init
    the runner runs before the first iteration refuses any other head, naming the key."""
    from mmengine.config import Config

    from mmdeblora.models.roi_heads import ResLTBBoxHead
    from tests.configs.toy_detector import write_toy_detector
    cfg = Config.fromfile(write_toy_detector(tmp_path, 'rotated_retinanet'))
    cfg.model.bbox_head.loss_cls = dict(type='ReweightLoss', class_counts=[5] * 15)
    model = MODELS.build(cfg.model)
    with pytest.raises(ValueError, match=r"ReweightLoss works only as the loss_cls of an RoI "
                       r"bbox head: model\.roi_head\.bbox_head\.loss_cls.*one-stage "
                       r"detector's model\.bbox_head\.loss_cls.*mmdet\.FocalLoss"):
        model.init_weights()
    with pytest.raises(ValueError, match=r'model\.roi_head\.bbox_head\.loss_cls'):
        model.bbox_head.loss_cls(torch.zeros(2, 16), torch.tensor([0, 15]))
    from mmdeblora.engine.checked_runner import check_components
    with pytest.raises(ValueError, match=r'^model\.bbox_head\.loss_cls: ReweightLoss works'):
        check_components(model)  # what CheckedRunner runs once it has built the model

    # the RoI bbox head asks: accepted, and its test-time scores are still the softmax
    head = toy_bbox_head(loss_cls=dict(type='ReweightLoss', class_counts=[1, 3]))
    head.init_weights()
    assert head.fc_cls.out_features == 3
    scores = torch.randn(2, 3)  # what the head's prediction applies (custom_cls_channels)
    assert torch.equal(head.loss_cls.get_activation(scores), scores.softmax(-1))
    reslt = toy_bbox_head(type='ResLTBBoxHead', groups=dict(head=[0], tail=[1]),
                          loss_cls=dict(type='ReweightLoss', class_counts=[1, 3]))
    assert isinstance(reslt, ResLTBBoxHead)  # a softmax over C + 1: ResLT takes it
    reslt.init_weights()
