"""ResLTBBoxHead: branch masks by group, the fused loss on a hand-computed example,
unchanged box regression, initialisation, test-time fusion and weight rescaling."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmdeblora.models.roi_heads import ResLTBBoxHead
from tests.models.toy_head import toy_bbox_head

GROUPS = dict(head=[0], middle=[1], tail=[2])  # C = 3, background = 3
DEFAULT_SCOPE = 'mmrotate'  # set around each test by tests/conftest.py (order-independent)


def _head(**kw) -> ResLTBBoxHead:
    kw.setdefault('groups', GROUPS)
    return toy_bbox_head(num_classes=3, type='ResLTBBoxHead', **kw)


def _ce(logits, y):
    """Softmax cross-entropy written out."""
    return math.log(sum(math.exp(v) for v in logits)) - logits[y]


def test_branch_masks_by_group():
    head = _head()
    masks = head.branch_masks(torch.tensor([0, 1, 2, 3, 2]))
    assert masks.tolist() == [[True, True, True, True, True],      # H: everything
                              [False, True, True, False, True],    # M: middle + tail
                              [False, False, True, False, True]]   # T: tail only
    with pytest.raises(ValueError, match='outside'):
        head.set_class_groups(dict(tail=[3]))  # background is not a class
    auto = _head(groups='auto')
    with pytest.raises(RuntimeError, match='ClassStatsHook'):
        auto.branch_masks(torch.tensor([0]))
    auto.set_class_groups(dict(head=[0], middle=[1], tail=[2]))  # as the hook does
    assert torch.equal(auto.branch_masks(torch.tensor([2])), masks[:, 2:3])


def test_fused_loss_on_a_hand_computed_example():
    beta = 0.8
    head = _head(beta=beta)
    labels = [0, 1, 2, 3]
    zh = [[1.0, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, -1.0, 0], [0, 0, 0, 2.0]]
    zm = [[0, 2.0, 0, 0], [0, 1.0, 0, 0], [0, 0, 3.0, 0], [1.0, 0, 0, 0]]
    zt = [[0, 0, 1.0, 0], [0, 0, 0, 1.0], [0, 0, 0.5, 0], [0, 0, 0, 0.0]]
    cls_score = torch.tensor([h + m + t for h, m, t in zip(zh, zm, zt)])
    # L_ice: H over all 4 RoIs, M over RoIs 1, 2 (middle, tail), T over RoI 2 (tail)
    ice = (sum(_ce(zh[i], labels[i]) for i in range(4))
           + _ce(zm[1], 1) + _ce(zm[2], 2) + _ce(zt[2], 2)) / (4 + 2 + 1)
    fused = [[a + b + c for a, b, c in zip(*rows)] for rows in zip(zh, zm, zt)]
    fce = sum(_ce(fused[i], labels[i]) for i in range(4)) / 4
    expected = beta * ice + (1 - beta) * fce
    n = len(labels)
    losses = head.loss(cls_score, torch.zeros(n, 5), torch.zeros(n, 6),
                       torch.tensor(labels), torch.ones(n), torch.zeros(n, 5),
                       torch.ones(n, 5))
    assert losses['loss_cls'].item() == pytest.approx(expected, rel=1e-5)
    pred = torch.tensor(fused).argmax(1)
    assert losses['acc'].item() == pytest.approx(
        100 * (pred == torch.tensor(labels)).float().mean().item())


def test_box_regression_is_upstreams():
    head = _head()
    plain = toy_bbox_head(num_classes=3)
    n = 6
    args = (torch.randn(n, 5), torch.zeros(n, 6), torch.tensor([0, 1, 2, 3, 3, 1]),
            torch.ones(n), torch.randn(n, 5), torch.ones(n, 5))
    ours = head.loss(torch.randn(n, 12), *args)['loss_bbox']
    theirs = plain.loss(torch.randn(n, 4), *args)['loss_bbox']
    assert ours.item() == pytest.approx(theirs.item())


def test_forward_init_and_test_time_rescaling():
    head = _head(test_weight_norm_gamma=1.0)
    head.init_weights()
    for bn in head.fc_cls.branches:  # not touched by the fc_cls Normal(0.01) init
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    assert head.fc_cls.fc.weight.std().item() < 0.05
    x = torch.randn(8, 1, 1, 1)
    cls_score, bbox_pred = head(x)
    assert cls_score.shape == (8, 12) and bbox_pred.shape == (8, 5)
    head.eval()
    cls_eval, _ = head(x)
    feat = head.shared_fcs[1](head.relu(head.shared_fcs[0](x.flatten(1)))).relu()
    w = head.fc_cls.fc.weight
    w_n = w / w.norm(dim=1, keepdim=True)
    expected = torch.cat([F.linear(bn(feat), w_n, head.fc_cls.fc.bias)
                          for bn in head.fc_cls.branches], 1)
    assert torch.allclose(cls_eval, expected, atol=1e-6)


def test_prediction_uses_the_fused_logits():
    head = _head().eval()
    cls_score = torch.randn(5, 12)
    roi = torch.cat([torch.zeros(5, 1), torch.rand(5, 2) * 50 + 20,
                     torch.full((5, 2), 10.0), torch.zeros(5, 1)], 1)
    res = head._predict_by_feat_single(roi=roi, cls_score=cls_score,
                                       bbox_pred=torch.zeros(5, 5),
                                       img_meta=dict(img_shape=(100, 100)))
    assert torch.allclose(res.scores, F.softmax(head.fuse(cls_score), -1))


def test_bad_config():
    with pytest.raises(ValueError, match='softmax'):
        _head(loss_cls=dict(type='ECMLoss', num_classes=3, class_counts=[1, 1, 1]))
    with pytest.raises(ValueError, match='branch_type'):
        _head(branch_type='conv')


def _toy_batch(model, cfg, toy_root):
    from mmengine.dataset import pseudo_collate
    from mmrotate.registry import DATASETS
    cfg.train_dataloader.dataset.data_root = toy_root + '/'
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    return model.data_preprocessor(pseudo_collate([dataset[0]]), True)


def test_refused_as_a_one_stage_head(tmp_path):
    """model.bbox_head of rotated RetinaNet: refused when the detector is built."""
    from mmengine.config import Config
    from mmrotate.registry import MODELS

    from tests.configs.toy_detector import write_toy_detector
    cfg = Config.fromfile(write_toy_detector(tmp_path, 'rotated_retinanet'))
    cfg.model.bbox_head = dict(type='ResLTBBoxHead', num_classes=15, groups=GROUPS)
    with pytest.raises(ValueError, match=r'one-stage detectors pass to model\.bbox_head'):
        MODELS.build(cfg.model)


def test_refused_in_a_cascade(tmp_path, toy_root):
    """RoI Transformer's first stage: the cascade's refinement would read the unfused
    branch blocks; refused at the first training step, naming where it fits."""
    from mmengine.config import Config
    from mmrotate.registry import MODELS

    from tests.configs.toy_detector import write_toy_detector
    cfg = Config.fromfile(write_toy_detector(tmp_path, 'roi_trans'))
    cfg.model.roi_head.bbox_head[0].update(type='ResLTBBoxHead', groups=GROUPS)
    model = MODELS.build(cfg.model)
    data = _toy_batch(model, cfg, toy_root)
    with pytest.raises(NotImplementedError, match=r'cascade.*model\.roi_head\.bbox_head'):
        model.loss(data['inputs'], data['data_samples'])


def test_last_cascade_stage_is_refused_before_training(tmp_path):
    """RoI Transformer's last stage: training would run (no refinement after it), and the
    cascade's score averaging would fail only at validation; CheckedRunner refuses it
    when it builds the model, naming the stage."""
    from mmengine.config import Config

    from mmdeblora.engine import CheckedRunner
    from tests.configs.toy_detector import write_toy_detector
    path = write_toy_detector(tmp_path, 'roi_trans')
    cfg = Config.fromfile(path)
    cfg.model.roi_head.bbox_head[-1].update(type='ResLTBBoxHead', groups=GROUPS)
    cfg.work_dir = str(tmp_path / 'work')
    with pytest.raises(ValueError, match=r'model\.roi_head\.bbox_head\.1: ResLTBBoxHead in a '
                       r'cascade'):
        CheckedRunner.from_cfg(cfg)
    control = Config.fromfile(path)  # the same detector without ResLT builds
    control.work_dir = str(tmp_path / 'control')
    CheckedRunner.from_cfg(control)
