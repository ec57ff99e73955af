"""DebLoRAFasterRCNN: plain FasterRCNN before de-biasing, the feature loss after."""
import copy
import os.path as osp

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData
from mmrotate.registry import MODELS
from mmrotate.structures import RotatedBoxes

import mmdeblora  # noqa: F401
from mmdeblora.deblora import calibrate, gt_instance_features

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
TOY_CFG = osp.join(REPO, 'configs', 'baselines', 'oriented_rcnn_r18_toy.py')
NUM_CLASSES = 15


def model_cfg(detector_type: str) -> dict:
    cfg = Config.fromfile(TOY_CFG).model
    cfg.type = detector_type
    cfg.backbone = dict(type='LoRABackbone', backbone=cfg.backbone, rank=4, alpha=4,
                        target_modules=['conv1', 'conv2'])
    return cfg


def batch(seed: int = 0, size: int = 64):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.rand(2, 3, size, size, generator=g)
    samples = []
    for i in range(2):
        s = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                        batch_input_shape=(size, size), scale_factor=(1, 1),
                                        ori_shape=(size, size)))
        n = 3
        xy = torch.rand(n, 2, generator=g) * (size - 24) + 12
        wh = torch.rand(n, 2, generator=g) * 10 + 8
        ang = torch.rand(n, 1, generator=g) - 0.5
        s.gt_instances = InstanceData(bboxes=RotatedBoxes(torch.cat([xy, wh, ang], 1)),
                                      labels=torch.tensor([0, 14, 13 - i]))
        samples.append(s)
    return inputs, samples


def build(detector_type='DebLoRAFasterRCNN', seed=0):
    torch.manual_seed(seed)
    m = MODELS.build(model_cfg(detector_type))
    m.init_weights()
    with torch.no_grad():  # a non-zero stage-1 adapter, as after stage-1 training
        for n, p in m.backbone.named_parameters():
            if 'lora_B.default' in n:
                p.normal_(0, 0.05)
    return m.train()


def test_behaves_like_faster_rcnn_before_debias():
    ours = build()
    plain = MODELS.build(model_cfg('mmdet.FasterRCNN'))
    plain.load_state_dict(ours.state_dict())
    plain.train()
    inputs, samples = batch()
    torch.manual_seed(1)
    a = ours.loss(inputs, copy.deepcopy(samples))
    torch.manual_seed(1)
    b = plain.loss(inputs, copy.deepcopy(samples))
    assert set(a) == set(b) and 'loss_deblora_feat' not in a
    for k in a:
        va = torch.stack(a[k]).sum() if isinstance(a[k], list) else a[k]
        vb = torch.stack(b[k]).sum() if isinstance(b[k], list) else b[k]
        assert torch.equal(va, vb), k


def test_feature_loss_targets_and_gradients():
    m = build()
    m.backbone.add_adapter('deblora')
    m.backbone.freeze_adapter('default')
    for p in m.neck.parameters():
        p.requires_grad_(False)
    inputs, samples = batch()
    d = 128
    centers = torch.nn.functional.normalize(torch.randn(NUM_CLASSES, d), dim=1)
    # alpha 0: the new adapter starts at B = 0, so the student is the stage-1 model
    m.set_debias(centers, torch.zeros(NUM_CLASSES))
    assert m.loss(inputs, samples)['loss_deblora_feat'].item() == pytest.approx(0, abs=1e-10)

    alphas = torch.zeros(NUM_CLASSES)
    alphas[13:] = 0.5  # calibrate classes 13, 14
    m.set_debias(centers, alphas, loss_weight=2.0)
    losses = m.loss(inputs, samples)
    with torch.no_grad():
        z, y = gt_instance_features(m, m.extract_feat(inputs), samples)
        want = 2.0 * ((z - calibrate(z, y, centers, alphas)) ** 2).sum(1).mean()
    assert losses['loss_deblora_feat'].item() == pytest.approx(want.item(), rel=1e-4)
    assert want > 0
    m.set_debias(centers, alphas, loss_weight=2.0, loss_scale=4.0)
    scaled = m.loss(inputs, samples)['loss_deblora_feat'].item()
    assert scaled == pytest.approx(want.item() / 4, rel=1e-4)

    m.zero_grad()
    losses['loss_deblora_feat'].backward()
    grads = {n: p.grad for n, p in m.backbone.named_parameters()}
    assert any(g is not None and g.abs().sum() > 0
               for n, g in grads.items() if 'lora_B.deblora' in n)
    assert all(g is None for n, g in grads.items() if '.default' in n)


def test_needs_lora_backbone_and_matching_classes():
    m = MODELS.build(model_cfg('DebLoRAFasterRCNN'))
    with pytest.raises(ValueError, match='class centers'):
        m.set_debias(torch.zeros(3, 8), torch.zeros(3))
    plain_cfg = Config.fromfile(TOY_CFG).model
    plain_cfg.type = 'DebLoRAFasterRCNN'
    with pytest.raises(TypeError, match='LoRABackbone'):
        MODELS.build(plain_cfg).set_debias(torch.zeros(15, 8), torch.zeros(15))
