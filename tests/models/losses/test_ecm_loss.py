"""ECMLoss: margins, weights and loss on a hand-computed example; gradient signs;
test-time activation; label_weights / avg_factor handling."""
import math

import pytest
import torch

from mmdeblora.models.losses import ECMLoss, ecm_margins_and_weights
from tests.models.toy_head import toy_bbox_head

# C = 2 classes with 1 and 3 instances, fg_bg_ratio 1: n = (1, 3, 4), N = 8
N_ALL = [1.0, 3.0, 4.0]


def _hand_margins():
    total = sum(N_ALL)
    pos, neg, w = [], [], []
    for n in N_ALL:
        n_neg = total - n
        pos.append(math.log((n ** 0.25 + n_neg ** 0.25) / n_neg ** 0.25))
        neg.append(math.log((n ** 0.25 + n_neg ** 0.25) / n ** 0.25))
        a = (total - n) / n
        w.append(a * math.log((1 + a) / a))
    return pos, neg, w


def _hand_loss(scores, label):
    """The official formula written out for one RoI: exp ratios, no stable form."""
    pos, neg, w = _hand_margins()
    out = 0.0
    for c, s in enumerate(scores):
        ep, en = math.exp(s + pos[c]), math.exp(-s + neg[c])
        p = ep / (ep + en)
        t = 1.0 if c == label else 0.0
        out += w[c] * -(t * math.log(p) + (1 - t) * math.log(1 - p))
    return out


def test_margins_and_weights():
    pos, neg, w = ecm_margins_and_weights([1, 3], fg_bg_ratio=1.0)
    hp, hn, hw = _hand_margins()
    assert pos.tolist() == pytest.approx(hp, rel=1e-6)
    assert neg.tolist() == pytest.approx(hn, rel=1e-6)
    assert w.tolist() == pytest.approx(hw, rel=1e-6)
    # the training logit is 2 s + pos - neg = 2 s + log(n_c / n_neg) / 4: a rare
    # class needs a larger score for the same probability (a larger margin)
    shift = (pos - neg).tolist()
    assert shift == pytest.approx([math.log(n / (8 - n)) / 4 for n in N_ALL], rel=1e-5)
    assert shift[0] < shift[1] < shift[2]
    # by hand for class 0: n_neg = 7 -> pos = log(1 + 7^-1/4) = 0.4792
    assert pos[0].item() == pytest.approx(0.47920, abs=1e-4)


def _in_roi_head(**kwargs) -> ECMLoss:
    """The loss as an RoI bbox head leaves it: asked for its class channels."""
    loss = ECMLoss(**kwargs)
    assert loss.get_cls_channels(kwargs['num_classes']) == kwargs['num_classes'] + 1
    return loss


def test_loss_value_matches_official_formula():
    loss = _in_roi_head(num_classes=2, class_counts=[1, 3], fg_bg_ratio=1.0)
    scores = torch.tensor([[0.5, -0.2, 0.1], [-1.0, 2.0, 0.3], [0.2, 0.1, 1.5]])
    labels = torch.tensor([0, 1, 2])
    hand = [_hand_loss(s, y) for s, y in zip(scores.tolist(), labels.tolist())]
    assert loss(scores, labels).item() == pytest.approx(sum(hand) / 3, rel=1e-5)
    # mmdet's call (weights 1, avg_factor = #RoIs) is the official sum / #RoIs
    assert loss(scores, labels, torch.ones(3), avg_factor=3.0).item() == \
        pytest.approx(sum(hand) / 3, rel=1e-5)
    # our choice: label weights weight RoIs, avg_factor normalises
    lw = torch.tensor([1.0, 0.0, 2.0])
    assert loss(scores, labels, lw, avg_factor=2.0).item() == \
        pytest.approx((hand[0] + 2 * hand[2]) / 2, rel=1e-5)
    per_roi = loss(scores, labels, reduction_override='none')
    assert per_roi.tolist() == pytest.approx(hand, rel=1e-5)


def test_gradient_pushes_the_positive_class_up():
    loss = _in_roi_head(num_classes=2, class_counts=[1, 3], fg_bg_ratio=1.0)
    scores = torch.zeros(2, 3, requires_grad=True)
    loss(scores, torch.tensor([1, 2])).backward()
    g = scores.grad
    assert g[0, 1] < 0 and g[1, 2] < 0  # descent raises the target's score
    assert g[0, 0] > 0 and g[0, 2] > 0 and g[1, 0] > 0 and g[1, 1] > 0


def test_test_time_activation_and_channels():
    loss = ECMLoss(num_classes=2)  # 'auto': activation needs no counts
    assert loss.get_cls_channels(2) == 3
    s = torch.tensor([[0.0, 0.0, 0.0], [2.0, -1.0, -3.0]])
    act = loss.get_activation(s)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert act[0].tolist() == pytest.approx([0.25, 0.25, 0.5])
    assert act[1].tolist() == pytest.approx(
        [sig(2) * (1 - sig(-3)), sig(-1) * (1 - sig(-3)), sig(-3)], rel=1e-6)
    acc = loss.get_accuracy(s, torch.tensor([2, 0]))
    assert acc['acc_objectness'].item() == 50.0  # bg logit 0 is not > 0
    assert acc['acc_classes'].item() == 100.0


def test_plugs_into_the_bbox_head_and_needs_counts():
    head = toy_bbox_head(loss_cls=dict(type='ECMLoss', num_classes=2,
                                       class_counts='auto'))
    assert head.fc_cls.out_features == 3 and head.custom_activation
    scores, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 2])
    with pytest.raises(RuntimeError, match='ClassStatsHook'):
        head.loss(scores, None, None, labels, torch.ones(4), None, None)
    head.loss_cls.set_class_counts([0, 5])  # a class without instances: finite
    losses = head.loss(scores, None, None, labels, torch.ones(4), None, None)
    assert torch.isfinite(losses['loss_cls']) and 'acc_classes' in losses
    with pytest.raises(ValueError, match='3 class counts for 2'):
        head.loss_cls.set_class_counts([1, 2, 3])


def test_refused_outside_an_roi_bbox_head(tmp_path):
    """In a one-stage head (rotated RetinaNet) or an RPN nothing asks ECMLoss for its
    channels: the weight init that the runner runs before the first iteration refuses,
    and so does the loss itself; in the RoI bbox head both pass."""
    from mmengine.config import Config
    from mmrotate.registry import MODELS

    from tests.configs.toy_detector import write_toy_detector
    cfg = Config.fromfile(write_toy_detector(tmp_path, 'rotated_retinanet'))
    cfg.model.bbox_head.loss_cls = dict(type='ECMLoss', num_classes=15,
                                        class_counts=[5] * 15)
    model = MODELS.build(cfg.model)
    with pytest.raises(ValueError, match=r"one-stage detector's model\.bbox_head\.loss_cls"):
        model.init_weights()
    with pytest.raises(ValueError, match=r'model\.roi_head\.bbox_head\.loss_cls'):
        model.bbox_head.loss_cls(torch.zeros(2, 16), torch.tensor([0, 15]))
    rpn = ECMLoss(num_classes=1, class_counts=[3])  # as an RPN builds it
    with pytest.raises(ValueError, match=r'model\.rpn_head\.loss_cls'):
        rpn.init_weights()
    head = toy_bbox_head(loss_cls=dict(type='ECMLoss', num_classes=2, class_counts=[1, 3]))
    head.init_weights()  # the RoI bbox head asked for C + 1 channels: accepted
    head.loss_cls(torch.zeros(2, 3), torch.tensor([0, 2]))


@pytest.mark.slow
def test_training_a_one_stage_detector_with_ecm_stops_before_the_first_iteration(
        tmp_path, toy_root):
    from tests.configs.toy_detector import write_toy_detector
    from tests.conftest import run_tool, toy_options
    cfg = write_toy_detector(tmp_path, 'rotated_retinanet', extra=(
        'model.update(bbox_head=dict(loss_cls=dict(\n'
        "    _delete_=True, type='ECMLoss', num_classes=15, class_counts=[5] * 15)))\n"))
    proc = run_tool('train.py', cfg, '--work-dir', str(tmp_path / 'wd'),
                    *toy_options(toy_root), check=False)
    assert proc.returncode != 0
    assert "one-stage detector's model.bbox_head.loss_cls" in proc.stderr
    assert 'Epoch(train)' not in proc.stdout + proc.stderr
