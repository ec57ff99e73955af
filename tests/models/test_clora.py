"""cLoRA for classification: CLoRABackbone (one adapter per route, run route by route) and
CLoRAClsHead (class c scored on its route), alone and inside DebLoRAImageClassifier."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import mmdeblora  # noqa: F401
from mmdeblora.deblora import DebiasState, Stage2Settings, calibrate

DEFAULT_SCOPE = 'mmpretrain'  # set around each test by tests/conftest.py
C = 5
GROUPS = dict(head=['a', 'b'], middle=['c'], tail=['d', 'e'])  # routes 0, 0, 1, 2, 2
ROUTE = [0, 0, 1, 2, 2]


def model_cfg(kind='ImageClassifier'):
    return dict(
        type=kind,
        backbone=dict(type='CLoRABackbone', routes=['head', 'middle', 'tail'], rank=2,
                      alpha=2, target_modules=['conv1', 'conv2'],
                      backbone=dict(type='ResNet', depth=18, stem_channels=8,
                                    base_channels=8, out_indices=(3, ))),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='CLoRAClsHead', num_classes=C, in_channels=64, routes='groups',
                  groups=GROUPS, classes=list('abcde')))


def build(kind='ImageClassifier'):
    torch.manual_seed(0)
    m = MODELS.build(model_cfg(kind))
    m.init_weights()
    with torch.no_grad():  # make the routes' adapters differ
        for n, p in m.backbone.named_parameters():
            if 'lora_B' in n:
                p.normal_(0, 0.1)
    return m


def images(n=3):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_backbone_runs_each_route_with_its_adapter():
    m = build().eval()
    bb, x = m.backbone, images()
    assert bb.adapter_names == ['clora_head', 'clora_middle', 'clora_tail']
    with torch.no_grad():
        out = bb(x)[-1]
        assert out.shape[0] == 3 * 3
        for r, name in enumerate(bb.routes):
            with bb.adapters_only([name]):
                alone = bb.base(x)[-1]
            assert torch.allclose(out[r * 3:(r + 1) * 3], alone, atol=1e-6)
        assert not torch.allclose(out[:3], out[3:6])
        bb.add_adapter('shared')  # a non-route adapter joins every route
        with torch.no_grad():
            for p in (p for n, p in bb.named_parameters() if 'lora_B.shared' in n):
                p.normal_(0, 0.1)
        out2 = bb(x)[-1]
        with bb.adapters_only(['clora_middle', 'shared']):
            assert torch.allclose(out2[3:6], bb.base(x)[-1], atol=1e-6)
        with bb.adapters_only([]):  # no adapter: the base on every route
            base = bb(x)[-1]
        assert torch.allclose(base[:3], base[6:], atol=1e-6)
    with pytest.raises(ValueError, match='adapter_name'):
        MODELS.build(dict(model_cfg()['backbone'], adapter_name='x'))
    with pytest.raises(NotImplementedError):
        bb.merge_and_unload()


def test_head_scores_each_class_on_its_route():
    m = build().eval()
    head = m.head
    assert head.route_of_class.tolist() == ROUTE
    assert 'head.route_of_class' in m.state_dict()  # tested models need no hook
    with torch.no_grad():
        feats = m.extract_feat(images())
        f = feats[-1].view(3, 3, -1)  # [route, image, D]
        z = head(feats)
        want = torch.stack([F.linear(f[ROUTE[c]], head.fc.weight, head.fc.bias)[:, c]
                            for c in range(C)], dim=1)
        assert torch.allclose(z, want, atol=1e-6)
        labels = torch.tensor([4, 0, 2])
        own = head.instance_view(feats[-1], labels)
        assert torch.allclose(own, torch.stack([f[2, 0], f[0, 1], f[1, 2]]))
        preds = m.predict(images())
    assert [int(p.pred_label) for p in preds] == z.argmax(1).tolist()
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    loss = build().eval().loss(images(), samples)['loss']  # same (eval) norms as z
    assert loss.item() == pytest.approx(F.cross_entropy(z, labels).item(), rel=1e-4)
    with pytest.raises(ValueError, match='3 feature rows per image'):
        head.loss((torch.randn(4, 64), ), samples)


def test_head_groups_auto_and_per_class_routes():
    auto = MODELS.build(dict(type='CLoRAClsHead', num_classes=C, in_channels=4,
                             groups='auto'))
    with pytest.raises(RuntimeError, match='ClassStatsHook'):
        auto((torch.randn(3, 4), ))
    auto.set_class_groups(dict(head=[0, 1], middle=[2], tail=[3, 4]))
    assert auto.route_of_class.tolist() == ROUTE
    with pytest.raises(ValueError, match='no group'):
        auto.set_class_groups(dict(head=[0], tail=[1]))
    per_class = MODELS.build(dict(type='CLoRAClsHead', num_classes=C, in_channels=4,
                                  routes='classes'))
    assert per_class.num_routes == C and per_class.route_of_class.tolist() == list(range(C))
    assert per_class((torch.randn(C * 2, 4), )).shape == (2, C)


def test_debias_stage_on_clora_uses_each_images_own_route():
    m = build('DebLoRAImageClassifier')
    x, labels = images(4), torch.tensor([0, 2, 3, 4])
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    m.eval()
    with torch.no_grad():
        z, y = m.instance_features(x, samples)
        rows = m.extract_feat(x)[-1].view(3, 4, -1)
    assert z.shape == (4, 64) and y.tolist() == labels.tolist()
    own = torch.stack([rows[ROUTE[c], i] for i, c in enumerate(labels.tolist())])
    assert torch.allclose(z, F.normalize(own, dim=1), atol=1e-6)
    stage1 = ['clora_head', 'clora_middle', 'clora_tail']
    h = F.normalize(torch.randn(C, 64, generator=torch.Generator().manual_seed(1)), dim=1)
    alphas = torch.tensor([0, 0, 0, 0.5, 0.5])
    state = DebiasState(centers=h, counts=torch.ones(C, C, dtype=torch.long),
                        class_centers=h, alphas=alphas, calibrated=alphas > 0,
                        class_names=list('abcde'))
    m.train()
    m.enter_debias_stage(state, Stage2Settings(stage1_adapters=stage1, loss_weight=1.0,
                                               loss_normalize=False))
    m.train()
    assert m.backbone.active_adapters == stage1 + ['deblora']
    losses = m.loss(x, copy.deepcopy(samples))
    gap = ((z - calibrate(z, y, h, alphas, True)) ** 2).sum(1)
    want = gap[alphas[y] > 0].mean()  # the calibrated instances' mean; the others' is 0
    assert losses['loss_deblora_feat'].item() == pytest.approx(want.item(), rel=1e-4)
    losses['loss_deblora_feat'].backward()
    grads = {n: p.grad for n, p in m.backbone.named_parameters()}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items()
               if 'lora_B.deblora' in n)  # B = 0: A gets none yet
    assert all(g is None for n, g in grads.items() if '.clora_' in n)


def test_forward_switches_each_route_once(monkeypatch):
    """A cLoRA forward switches the LoRA layers once per route and once back (issue 19),
    never walks the base parameters, and leaves the active set and trainability as they
    were."""
    bb = build().backbone.eval()
    bb.freeze_adapter('clora_head')
    grads = {n: p.requires_grad for n, p in bb.named_parameters()}
    layer = bb.base.layer1[0].conv1
    switches, walks = [], []
    switch, walk = layer.set_adapter, bb.base.named_parameters
    monkeypatch.setattr(layer, 'set_adapter',
                        lambda names, *a, **k: switches.append(list(names)) or switch(names))
    monkeypatch.setattr(bb.base, 'named_parameters',
                        lambda *a, **k: walks.append(1) or walk(*a, **k))
    with torch.no_grad():
        bb(images())
    assert switches == [[name] for name in bb.routes] + [bb.routes]
    assert walks == []
    assert bb.active_adapters == bb.routes
    assert {n: p.requires_grad for n, p in bb.named_parameters()} == grads


def test_select_trains_one_route_and_keeps_the_others_active():
    """One class per run (the seed paper's cLoRA, formerly LoRABackbone's clora_select):
    only the selected route's adapter trains; the others are frozen and still active."""
    bb = MODELS.build(dict(model_cfg()['backbone'], select='middle'))
    assert bb.adapter_names == ['clora_head', 'clora_middle', 'clora_tail']
    assert bb.active_adapters == bb.routes
    assert [bb.is_trainable(n) for n in bb.routes] == [False, True, False]
    trainable = {n for n, p in bb.base.named_parameters() if p.requires_grad}
    assert trainable and all('.clora_middle.' in n for n in trainable)
    with torch.no_grad():  # the forward's route switches keep it that way
        bb(images())
    assert {n for n, p in bb.base.named_parameters() if p.requires_grad} == trainable
    with pytest.raises(ValueError, match='not one of the routes'):
        MODELS.build(dict(model_cfg()['backbone'], select='ship'))
