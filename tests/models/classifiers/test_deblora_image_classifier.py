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


def test_stage2_task_loss_is_upstreams_for_classifiers():
    from mmpretrain.models import ImageClassifier
    m = build()
    m.enter_debias_stage(state(torch.tensor([0, 0, 0, 0.5, 0.5])), Stage2Settings())
    with torch.no_grad():
        for n, p in m.backbone.named_parameters():
            if 'lora_B.deblora' in n:
                p.normal_(0, 0.05)
    x, samples = batch()
    parts = m.debias_loss_parts(x, copy.deepcopy(samples))
    upstream = ImageClassifier.loss(m, x, copy.deepcopy(samples))
    assert torch.equal(parts.task['loss'], upstream['loss'])


@pytest.mark.parametrize('alpha,reduction', [(0.5, 'sample'), (0.0, 'sample'),
                                             (0.5, 'mean')])
def test_augment_mode_trains_the_head_on_calibrated_copies(alpha, reduction):
    """mode='augment' (the official scripts' variant): no new adapter, the backbone frozen;
    the head's own loss on calibrated copies of the calibrated images' pooled features,
    each the calibrated direction at the feature's own norm. Alpha 0 (the control): the
    copies are the features themselves. ``augment_reduction='sample'``: each copy weighs
    as one image of the batch (1 copy of 4 images: a quarter of the copies' mean)."""
    m = build()
    x, samples = batch()
    alphas = torch.tensor([0, 0, 0, alpha, alpha])
    st = state(alphas)
    st.calibrated = torch.tensor([False, False, False, True, True])
    m.enter_debias_stage(st, Stage2Settings(mode='augment', augment_weight=2.0,
                                            augment_reduction=reduction))
    m.train()  # the stage-1 path (norms) in eval mode
    with torch.no_grad():
        feats = m.extract_feat(x)[-1]
    assert m.backbone.adapter_names == ['default']  # no new adapter
    assert all(not p.requires_grad for p in m.backbone.parameters())
    losses = m.loss(x, copy.deepcopy(samples))
    assert set(losses) == {'loss', 'loss_deblora_aug'}  # no feature loss
    # by hand: images 3 (class 3) and 0..2 uncalibrated -> copies of image 3 only
    y = torch.tensor([0, 1, 2, 3])
    z = torch.nn.functional.normalize(feats, dim=1)
    z_hat = calibrate(z, y, st.class_centers, alphas, True)
    copy3 = z_hat[3:] * feats[3:].norm(dim=1, keepdim=True)
    if alpha == 0:
        assert torch.allclose(copy3, feats[3:], atol=1e-6)
    want = m.head.loss((copy3, ), [samples[3]])['loss'] * 2.0
    if reduction == 'sample':
        want = want * 1 / len(samples)
    assert losses['loss_deblora_aug'].item() == pytest.approx(want.item(), rel=1e-5)
    losses['loss_deblora_aug'].backward()
    assert m.head.fc.weight.grad is not None and m.head.fc.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.backbone.parameters())


def test_both_mode_has_the_feature_loss_and_the_copies():
    m = build()
    x, samples = batch()
    m.enter_debias_stage(state(torch.tensor([0, 0, 0, 0.5, 0.5])), Stage2Settings(mode='both'))
    assert m.backbone.adapter_names == ['default', 'deblora']
    losses = m.loss(x, copy.deepcopy(samples))
    assert {'loss', 'loss_deblora_feat', 'loss_deblora_aug'} <= set(losses)
    m.zero_grad()
    losses['loss_deblora_aug'].backward()  # detached copies: the head only
    assert all(p.grad is None for n, p in m.backbone.named_parameters())


def test_augment_mode_refuses_clora_heads():
    m = build()
    m.head.instance_view = lambda x, labels: x
    with pytest.raises(TypeError, match='one feature row per image'):
        m.debias_check(Stage2Settings(mode='augment'))
    with pytest.raises(ValueError, match="mode must be one of"):
        Stage2Settings(mode='augmented')
    with pytest.raises(ValueError, match="augment_reduction must be one of"):
        Stage2Settings(mode='augment', augment_reduction='sum')


def test_tail_replay_images_join_the_calibrated_mean_only():
    """Replay images (marked, after the batch's own) leave the head's loss alone and add
    their calibrated images to the feature loss's calibrated mean."""
    from mmdeblora.engine.replay import REPLAY_KEY
    m = build()
    alphas = torch.tensor([0, 0, 0, 0.5, 0.5])
    m.enter_debias_stage(state(alphas), Stage2Settings(loss_weight=1.0, loss_normalize=False))
    with torch.no_grad():
        for n, p in m.backbone.named_parameters():
            if 'lora_B.deblora' in n:
                p.normal_(0, 0.05)
    x, samples = batch()
    rx = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    replay = [DataSample().set_gt_label(c) for c in (4, 3, 0)]
    for sample in replay:
        sample.set_metainfo({REPLAY_KEY: True})
    own = m.debias_loss_parts(x, copy.deepcopy(samples))
    mixed = m.debias_loss_parts(torch.cat([x, rx]), copy.deepcopy(samples) + replay)
    assert torch.equal(own.task['loss'], mixed.task['loss']) and own.gaps == mixed.gaps
    with torch.no_grad():
        z, y = m.instance_features(torch.cat([x, rx]), samples + replay)
        _, t = m.debias_targets(torch.cat([x, rx]), samples + replay)
        gap = ((z - t) ** 2).sum(1)
    cal = torch.tensor([False, False, False, True, True, True, False])  # replay class 0: out
    held = torch.tensor([True, True, True, False, False, False, False])
    assert float(mixed.feature.detach()) == pytest.approx(
        float(gap[cal].mean() + gap[held].mean()), rel=1e-6)
    assert float(own.feature.detach()) == pytest.approx(
        float(gap[:4][cal[:4]].mean() + gap[held].mean()), rel=1e-6)
