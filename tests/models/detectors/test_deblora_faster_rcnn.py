"""The detectors' side of the de-biasing interface: FasterRCNN before de-biasing, the
explicit stage-2 path, a truly fixed stage-1 path (BN and diffusion noise), RoI Transformer."""
import copy
import os.path as osp

import mmrotate
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData
from mmrotate.registry import MODELS
from mmrotate.structures import RotatedBoxes

import mmdeblora  # noqa: F401
from mmdeblora.deblora import DebiasState, Stage2Settings, calibrate
from mmdeblora.models import DebiasModel

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
TOY_CFG = osp.join(REPO, 'configs', 'baselines', 'oriented_rcnn_r18_toy.py')
SD_CFG = osp.join(REPO, 'configs', 'baselines', 'oriented_rcnn_sd_tiny_lora_toy.py')
ROI_TRANS = osp.join(osp.dirname(mmrotate.__file__), '.mim', 'configs', 'roi_trans',
                     'roi-trans-le90_r50_fpn_1x_dota.py')
NUM_CLASSES = 15
DEFAULT_SCOPE = 'mmrotate'  # set around each test by tests/conftest.py


def model_cfg(detector_type: str, lora: bool = True) -> dict:
    cfg = Config.fromfile(TOY_CFG).model
    cfg.type = detector_type
    if lora:
        cfg.backbone = dict(type='LoRABackbone', backbone=cfg.backbone, rank=4, alpha=4,
                            target_modules=['conv1', 'conv2'],
                            trainable_extra=[r'(.*\.)?(bn\d|downsample\.1)\.(weight|bias)'])
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


def build(cfg=None, seed=0):
    torch.manual_seed(seed)
    m = MODELS.build(cfg or model_cfg('DebLoRAFasterRCNN'))
    m.init_weights()
    with torch.no_grad():  # a non-zero stage-1 adapter, as after stage-1 training
        for n, p in m.backbone.named_parameters():
            if 'lora_B.default' in n:
                p.normal_(0, 0.05)
    return m.train()


def state_for(m, alphas, dim=128, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(torch.randn(NUM_CLASSES, dim, generator=g),
                                            dim=1) * 0.6  # a mix of centers: norm < 1
    return DebiasState(centers=centers[:4], counts=torch.ones(4, NUM_CLASSES, dtype=torch.long),
                       class_centers=centers, alphas=alphas,
                       calibrated=alphas > 0, class_names=[str(i) for i in range(15)],
                       loss_scale=scale)


def _same_losses(a, b):
    assert set(a) == set(b)
    for k in a:
        va, vb = (torch.stack(v[k]).sum() if isinstance(v[k], list) else v[k] for v in (a, b))
        assert torch.equal(va, vb), k


def test_behaves_like_faster_rcnn_before_debias():
    ours = build()
    assert isinstance(ours, DebiasModel) and not ours.debias_enabled
    plain = MODELS.build(model_cfg('mmdet.FasterRCNN'))
    assert not isinstance(plain, DebiasModel)
    plain.load_state_dict(ours.state_dict())
    plain.train()
    inputs, samples = batch()
    torch.manual_seed(1)
    a = ours.loss(inputs, copy.deepcopy(samples))
    torch.manual_seed(1)
    b = plain.loss(inputs, copy.deepcopy(samples))
    assert 'loss_deblora_feat' not in a
    _same_losses(a, b)


def test_stage2_task_loss_is_upstreams():
    """The stage-2 task loss is mmdet's ``FasterRCNN.loss`` itself on the stage-2 model
    (nothing copied that could drift), and the captured features are extract_feat's."""
    from mmdet.models.detectors import FasterRCNN
    m = build()
    alphas = torch.zeros(NUM_CLASSES)
    alphas[13:] = 0.5
    m.enter_debias_stage(state_for(m, alphas), Stage2Settings(loss_weight=1.0))
    with torch.no_grad():  # a trained de-biasing adapter
        for n, p in m.backbone.named_parameters():
            if 'lora_B.deblora' in n:
                p.normal_(0, 0.05)
    inputs, samples = batch()
    torch.manual_seed(1)
    parts = m.debias_loss_parts(inputs, copy.deepcopy(samples))
    torch.manual_seed(1)
    with m.backbone.deterministic_features():
        upstream = FasterRCNN.loss(m, inputs, copy.deepcopy(samples))
    _same_losses(parts.task, upstream)
    losses = m.loss(inputs, copy.deepcopy(samples))
    # the feature loss, and the batch's gaps logged beside it (no 'loss' in the key)
    assert set(losses) == set(upstream) | {'loss_deblora_feat', 'deblora_cal_gap',
                                           'deblora_other_gap'}
    assert float(losses['deblora_cal_gap']) == pytest.approx(parts.gaps.cal_gap, rel=1e-4)
    with torch.no_grad():  # the feature loss is computed on extract_feat's output
        z, y = m.instance_features(inputs, samples)
        z1, t = m.debias_targets(inputs, samples)
        cal = alphas[y] > 0
        gap = ((z - t) ** 2).sum(1)
    assert float(parts.feature) == pytest.approx(float(gap[cal].mean() + gap[~cal].mean()),
                                                 rel=1e-5)
    assert parts.gaps.cal_gap == pytest.approx(float(gap[cal].mean()), rel=1e-5)
    assert parts.gaps.num_cal == int(cal.sum()) and parts.gaps.num_other == int((~cal).sum())


def test_feature_loss_targets_and_gradients():
    m = build()
    inputs, samples = batch()
    stage2 = Stage2Settings(loss_weight=2.0, loss_normalize=True)
    # alpha 0: the new adapter starts at B = 0, so the student is the stage-1 model
    m.enter_debias_stage(state_for(m, torch.zeros(NUM_CLASSES)), stage2)
    assert m.backbone.adapter_names == ['default', 'deblora']
    assert m.loss(inputs, samples)['loss_deblora_feat'].item() == 0

    alphas = torch.zeros(NUM_CLASSES)
    alphas[13:] = 0.5  # calibrate classes 13, 14
    st = state_for(m, alphas, scale=4.0)
    m.enter_debias_stage(st, stage2)  # idempotent: the adapter exists already
    assert m.backbone.adapter_names == ['default', 'deblora']
    losses = m.loss(inputs, samples)
    with torch.no_grad():
        z, y = m.instance_features(inputs, samples, ['default'])
        t = calibrate(z, y, st.class_centers, alphas, renormalize=True)
        assert torch.equal(m.debias_targets(inputs, samples)[1], t)
        gap = ((z - t) ** 2).sum(1)
        cal = alphas[y] > 0
        assert cal.any() and (~cal).any()
        # two means: the calibrated instances' gap, and the others' (0 here: B = 0)
        want = 2.0 / 4.0 * (gap[cal].mean() + gap[~cal].mean())
    assert torch.allclose(t.norm(dim=1), torch.ones(len(t)))  # targets on the sphere
    assert want > 0
    assert losses['loss_deblora_feat'].item() == pytest.approx(want.item(), rel=1e-5)

    m.zero_grad()
    losses['loss_deblora_feat'].backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    assert any(g is not None and g.abs().sum() > 0
               for n, g in grads.items() if 'lora_B.deblora' in n)
    frozen = [n for n in grads if '.default' in n or n.startswith('neck.') or '.bn' in n]
    assert frozen and all(grads[n] is None for n in frozen)


def _bn_buffers(m):
    return {n: b.clone() for n, b in m.named_buffers() if 'running' in n}


def test_stage1_path_is_fixed_with_batch_norm():
    """norm_eval=False (the toy ResNet configs): BN in train mode in stage 1. In stage 2
    the target pass equals extraction bit for bit, and training never moves BN stats."""
    m = build()
    inputs, samples = batch()
    m.eval()
    with torch.no_grad():
        extracted, _ = m.instance_features(inputs, samples)  # as at the switch
    m.train()
    alphas = torch.zeros(NUM_CLASSES)
    alphas[14] = 0.5
    m.enter_debias_stage(state_for(m, alphas), Stage2Settings())
    m.train()  # the runner calls train() every epoch
    bn = [mod for mod in m.backbone.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert bn and not any(mod.training for mod in bn) and m.roi_head.training
    before = _bn_buffers(m)
    with torch.no_grad():
        target_pass, _ = m.instance_features(inputs, samples, ['default'])
    assert torch.equal(target_pass, extracted)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01)
    for _ in range(2):
        losses = m.loss(inputs, copy.deepcopy(samples))
        opt.zero_grad()
        sum(v if torch.is_tensor(v) else sum(v) for k, v in losses.items()
            if 'loss' in k).backward()
        opt.step()
    after = _bn_buffers(m)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():  # the stage-1 model behind the targets did not move
        again, _ = m.instance_features(inputs, samples, ['default'])
    assert torch.equal(again, extracted)


def test_stage1_path_is_fixed_with_diffusion_noise():
    """SDBackbone draws fresh noise per forward; the de-biasing passes share fixed noise,
    so extraction and the stage-2 target pass agree bit for bit."""
    cfg = Config.fromfile(SD_CFG).model
    cfg.type = 'DebLoRAFasterRCNN'
    cfg.backbone.backbone.test_noise_draws = 2
    m = build(cfg)
    inputs, samples = batch(size=128)
    inputs = inputs * 255
    data = m.data_preprocessor(dict(inputs=list(inputs), data_samples=samples), False)
    x, ds = data['inputs'], data['data_samples']
    m.eval()
    with torch.no_grad():
        extracted, _ = m.instance_features(x, ds)
        # without the fixed noise, two passes differ: the noise the fix removes
        torch.manual_seed(0)
        a = m.backbone(x)[1]
        b = m.backbone(x)[1]
    assert not torch.equal(a, b)
    m.train()
    alphas = torch.zeros(NUM_CLASSES)
    alphas[14] = 0.5
    m.enter_debias_stage(state_for(m, alphas, dim=cfg.neck.out_channels), Stage2Settings())
    m.train()
    with torch.no_grad():
        target_pass, _ = m.instance_features(x, ds, ['default'])
        student, _ = m.instance_features(x, ds)  # new adapter at B = 0: the same model
    assert torch.equal(target_pass, extracted)
    assert torch.equal(student, extracted)
    # a calibrated-free batch has a zero feature loss at the start of stage 2
    loss = m.loss(x, [s for s in ds])['loss_deblora_feat']
    assert loss.item() > 0  # class 14 is calibrated and in the batch
    m.enter_debias_stage(state_for(m, torch.zeros(NUM_CLASSES),
                                   dim=cfg.neck.out_channels), Stage2Settings())
    assert m.loss(x, ds)['loss_deblora_feat'].item() == 0


def test_roi_transformer_features_from_the_last_stage():
    cfg = Config.fromfile(ROI_TRANS).model
    toy = Config.fromfile(TOY_CFG).model
    cfg.type = 'DebLoRACascadeRCNN'
    cfg.backbone = model_cfg('DebLoRAFasterRCNN').backbone
    cfg.neck, cfg.rpn_head.in_channels, cfg.rpn_head.feat_channels = toy.neck, 128, 128
    for ext, head in zip(cfg.roi_head.bbox_roi_extractor, cfg.roi_head.bbox_head):
        ext.out_channels, head.in_channels, head.fc_out_channels = 128, 128, 256
    m = build(cfg)
    inputs, samples = batch()
    extractor = m.roi_head.bbox_roi_extractor[-1]
    assert type(extractor).__name__ == 'RotatedSingleRoIExtractor'
    m.eval()
    with torch.no_grad():
        z, y = m.instance_features(inputs, samples)
        rois = torch.cat([torch.cat([torch.full((3, 1), float(i)), s.gt_instances.bboxes.tensor],
                                    1) for i, s in enumerate(samples)])
        want = extractor(m.extract_feat(inputs)[:extractor.num_inputs], rois).mean((2, 3))
    assert z.shape == (6, 128) and y.tolist() == [0, 14, 13, 0, 14, 12]
    assert torch.allclose(z, torch.nn.functional.normalize(want, dim=1), atol=1e-6)
    m.train()
    m.enter_debias_stage(state_for(m, torch.zeros(NUM_CLASSES)), Stage2Settings())
    losses = m.loss(inputs, samples)
    assert 's1.loss_cls' in losses and losses['loss_deblora_feat'].item() == 0
    alphas = torch.zeros(NUM_CLASSES)
    alphas[12:] = 0.5
    m.enter_debias_stage(state_for(m, alphas), Stage2Settings())
    assert m.loss(inputs, samples)['loss_deblora_feat'].item() > 0


def test_needs_lora_backbone_and_matching_classes():
    m = MODELS.build(model_cfg('DebLoRAFasterRCNN'))
    with pytest.raises(ValueError, match='class centers'):
        st = state_for(m, torch.zeros(NUM_CLASSES))
        st.class_centers = st.class_centers[:3]
        m.enter_debias_stage(st, Stage2Settings())
    plain = MODELS.build(model_cfg('DebLoRAFasterRCNN', lora=False))
    with pytest.raises(TypeError, match='LoRABackbone'):
        plain.debias_check(Stage2Settings())
    with pytest.raises(ValueError, match=r"stage1_adapters names \['stage1'\]"):
        m.debias_check(Stage2Settings(stage1_adapters=['stage1']))
    with pytest.raises(ValueError, match='adapter_cfg'):
        m.debias_check(Stage2Settings(adapter_cfg=dict(target_modules=['conv9'])))


@pytest.mark.parametrize('reduction', ['sample', 'mean'])
def test_augment_mode_trains_the_box_head_on_shifted_roi_features(reduction):
    """mode='augment' on Oriented R-CNN: no new adapter, backbone and neck frozen; the box
    head's classification loss on the calibrated GT boxes' RoI maps, each shifted so that
    its average becomes the calibrated copy of that average. ``augment_reduction='sample'``:
    each copy weighs as one sampled RoI of the batch (sampler.num per image)."""
    from mmdeblora.deblora import gt_rois, roi_extractor
    m = build()
    alphas = torch.zeros(NUM_CLASSES)
    alphas[13:] = 0.5
    st = state_for(m, alphas)
    m.enter_debias_stage(st, Stage2Settings(mode='augment', augment_reduction=reduction))
    m.train()
    assert m.backbone.adapter_names == ['default']
    assert not any(p.requires_grad for p in m.backbone.parameters())
    assert not any(p.requires_grad for p in m.neck.parameters())
    inputs, samples = batch()
    torch.manual_seed(1)
    losses = m.loss(inputs, copy.deepcopy(samples))
    assert 'loss_deblora_aug' in losses and 'loss_deblora_feat' not in losses
    with torch.no_grad():  # by hand
        feats = m.extract_feat(inputs)
        labels = torch.cat([s.gt_instances.labels for s in samples])
        cal = alphas[labels] > 0
        rois = gt_rois([s.gt_instances.bboxes for s in samples])[cal]
        maps = roi_extractor(m)(feats[:4], rois)
        x = maps.mean((2, 3))
        z_hat = calibrate(torch.nn.functional.normalize(x, dim=1), labels[cal],
                          st.class_centers, alphas, renormalize=True)
        shifted = maps + (z_hat * x.norm(dim=1, keepdim=True) - x)[:, :, None, None]
        assert torch.allclose(shifted.mean((2, 3)), z_hat * x.norm(dim=1, keepdim=True),
                              atol=1e-5)
        head = m.roi_head.bbox_head
        want = head.loss_cls(head(shifted)[0], labels[cal])
        if reduction == 'sample':
            rois_per_batch = m.train_cfg['rcnn']['sampler']['num'] * len(samples)
            want = want * int(cal.sum()) / rois_per_batch
    assert losses['loss_deblora_aug'].item() == pytest.approx(want.item(), rel=1e-5)
    m.zero_grad()
    losses['loss_deblora_aug'].backward()
    assert m.roi_head.bbox_head.fc_cls.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.backbone.parameters())


def test_tail_replay_feeds_the_calibrated_mean_only():
    """Images marked as tail replay (appended after the batch's own) add their calibrated
    instances to the feature loss's calibrated mean, and nothing else: the task loss and
    the logged gaps are the batch's own; with lambda 0 they are skipped."""
    from mmdeblora.engine.replay import REPLAY_KEY
    m = build()
    alphas = torch.zeros(NUM_CLASSES)
    alphas[13:] = 0.5
    m.enter_debias_stage(state_for(m, alphas), Stage2Settings(loss_weight=1.0))
    with torch.no_grad():
        for n, p in m.backbone.named_parameters():
            if 'lora_B.deblora' in n:
                p.normal_(0, 0.05)
    inputs, samples = batch()
    r_inputs, r_samples = batch(seed=5)
    for s in r_samples:
        s.set_metainfo({REPLAY_KEY: True})
    both_inputs = torch.cat([inputs, r_inputs])
    torch.manual_seed(1)
    own = m.debias_loss_parts(inputs, copy.deepcopy(samples))
    torch.manual_seed(1)
    mixed = m.debias_loss_parts(both_inputs, copy.deepcopy(samples + r_samples))
    _same_losses(own.task, mixed.task)
    assert own.gaps == mixed.gaps
    with torch.no_grad():
        z, y = m.instance_features(both_inputs, samples + r_samples)
        _, t = m.debias_targets(both_inputs, samples + r_samples)
        gap = ((z - t) ** 2).sum(1)
        cal = alphas[y] > 0
        held = ~cal
        held[6:] = False  # the replay images' uncalibrated instances are not held
        assert cal[6:].any() and (~cal[6:]).any()
        want = gap[cal].mean() + gap[held].mean()
        wrong = [float(gap[cal].mean() + gap[~cal].mean()),  # replay's others held too
                 float(gap[cal[:6].nonzero()].mean() + gap[held].mean())]  # no replay
    got = float(mixed.feature.detach())
    assert got == pytest.approx(float(want), rel=1e-6)
    assert all(abs(got - w) > 1e-5 * got for w in wrong), (got, wrong)
    # lambda 0: the replay images are dropped, the parts equal the batch's own
    m.debias_plan = m.debias_plan.replace(loss_weight=0.0)
    torch.manual_seed(1)
    a = m.debias_loss_parts(inputs, copy.deepcopy(samples))
    torch.manual_seed(1)
    b = m.debias_loss_parts(both_inputs, copy.deepcopy(samples + r_samples))
    _same_losses(a.task, b.task)
    assert float(a.feature.detach()) == float(b.feature.detach()) == 0
    # replay images must come last
    with pytest.raises(ValueError, match='must follow'):
        m.debias_loss_parts(torch.cat([r_inputs, inputs]),
                            copy.deepcopy(r_samples + samples))
