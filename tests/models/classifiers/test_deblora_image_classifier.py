"""The classifier side of the de-biasing interface: one feature per image."""
import copy

import pytest
import torch
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import mmdeblora  # noqa: F401
from mmdeblora.deblora import DebiasState, Stage2Settings, calibrate
from mmdeblora.models import DebiasModel

DEFAULT_SCOPE = 'mmpretrain'  # set around each test by tests/conftest.py
C = 5


DIMS = dict(resnet=64, vit=192)


def model_cfg(kind='DebLoRAImageClassifier', arch='resnet'):
    if arch == 'vit':  # mmpretrain's ViT, LoRA on the attention projections, cls token
        return dict(
            type=kind,
            backbone=dict(type='LoRABackbone', rank=4, alpha=4, target_modules=['qkv', 'proj'],
                          backbone=dict(type='VisionTransformer', arch='deit-tiny',
                                        img_size=32, patch_size=16, out_type='cls_token')),
            head=dict(type='LinearClsHead', num_classes=C, in_channels=DIMS['vit']))
    return dict(
        type=kind,
        backbone=dict(type='LoRABackbone', rank=4, alpha=4, target_modules=['conv1', 'conv2'],
                      backbone=dict(type='ResNet', depth=18, stem_channels=8,
                                    base_channels=8, out_indices=(3, )),
                      trainable_extra=[r'.*bn\d?\.(weight|bias)']),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=C, in_channels=DIMS['resnet']))


def build(kind='DebLoRAImageClassifier', arch='resnet'):
    torch.manual_seed(0)
    m = MODELS.build(model_cfg(kind, arch))
    m.init_weights()
    with torch.no_grad():
        for n, p in m.backbone.named_parameters():
            if 'lora_B.default' in n:
                p.normal_(0, 0.05)
    return m.train()


def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g)
    samples = [DataSample().set_gt_label(i % C) for i in range(4)]
    return x, samples


def state(alphas, dim=64):
    g = torch.Generator().manual_seed(1)
    h = torch.nn.functional.normalize(torch.randn(C, dim, generator=g), dim=1) * 0.5
    return DebiasState(centers=h, counts=torch.ones(C, C, dtype=torch.long), class_centers=h,
                       alphas=alphas, calibrated=alphas > 0,
                       class_names=[str(i) for i in range(C)])


@pytest.mark.parametrize('arch', ['resnet', 'vit'])
def test_image_classifier_before_and_after_debias(arch):
    m = build(arch=arch)
    plain = build('ImageClassifier', arch)
    assert isinstance(m, DebiasModel) and not isinstance(plain, DebiasModel)
    x, samples = batch()
    assert torch.equal(m.loss(x, copy.deepcopy(samples))['loss'],
                       plain.loss(x, copy.deepcopy(samples))['loss'])
    m.eval()
    with torch.no_grad():
        z, y = m.instance_features(x, samples)
    assert z.shape == (4, DIMS[arch]) and y.tolist() == [0, 1, 2, 3]
    assert torch.allclose(z.norm(dim=1), torch.ones(4))
    m.train()
    alphas = torch.tensor([0, 0, 0, 0.5, 0.5])
    st = state(alphas, DIMS[arch])
    m.enter_debias_stage(st, Stage2Settings(loss_weight=1.0, loss_normalize=False))
    m.train()
    with torch.no_grad():  # stage-1 path in eval mode: the target pass equals extraction
        z1, _ = m.instance_features(x, samples, ['default'])
    assert torch.equal(z1, z)
    losses = m.loss(x, samples)
    gap = ((z - calibrate(z, y, st.class_centers, alphas, True)) ** 2).sum(1)
    want = gap[alphas[y] > 0].mean()  # + the others' mean, 0 while the new B is 0
    assert float(gap[alphas[y] == 0].abs().max()) == 0
    assert losses['loss_deblora_feat'].item() == pytest.approx(want.item(), rel=1e-5)
    assert 'loss' in losses  # the head's own loss is still there
    losses['loss_deblora_feat'].backward()
    grads = {n: p.grad for n, p in m.backbone.named_parameters()}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items()
               if 'lora_B.deblora' in n)
    assert all(g is None for n, g in grads.items() if '.default' in n or 'bn' in n)
