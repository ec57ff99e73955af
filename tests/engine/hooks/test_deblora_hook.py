"""DebLoRAHook on tiny toy runs: checks before epoch 0, the switch, the optimizer, the loss
scale, what it writes, resume, and RoI Transformer."""
import copy
import glob
import json
import os.path as osp

import mmrotate
import pytest
import torch
from mmengine.config import Config, DictAction
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmdeblora.deblora import DebiasState
from mmdeblora.utils.launch import register_all
from tests.conftest import REPO, toy_options

CFG = osp.join(REPO, 'configs', 'deblora', 'oriented_rcnn_r18_deblora_toy.py')
SD_CFG = osp.join(REPO, 'configs', 'deblora', 'oriented_rcnn_sd_tiny_deblora_toy.py')
ROI_TRANS = osp.join(osp.dirname(mmrotate.__file__), '.mim', 'configs', 'roi_trans',
                     'roi-trans-le90_r50_fpn_1x_dota.py')


class Probe(Hook):
    """Records, at the start of each epoch (after DebLoRAHook), what the run looks like;
    with ``expected_loss``, the mean stage-2 feature loss over the whole training set
    before any stage-2 update (the expected first stage-2 loss)."""
    priority = 'LOW'

    def __init__(self, expected_loss=False):
        self.epochs, self.iters, self.expected = {}, [], None
        self.expected_loss = expected_loss

    def before_train_epoch(self, runner):
        model = runner.model
        names = {id(p): n for n, p in model.named_parameters()}
        opt = [names[id(p)] for g in runner.optim_wrapper.optimizer.param_groups
               for p in g['params']]
        hook = next(h for h in runner.hooks if type(h).__name__ == 'DebLoRAHook')
        self.epochs[runner.epoch] = dict(
            stage=hook.stage, adapters=model.backbone.adapter_names, opt=opt,
            trainable=[n for n, p in model.named_parameters() if p.requires_grad],
            lr=runner.optim_wrapper.get_lr()['lr'][0])
        if self.expected_loss and hook.stage == 2 and self.expected is None:
            model.train()
            with torch.no_grad():
                vals = [float(model.loss(**model.data_preprocessor(b, True))
                              ['loss_deblora_feat']) for b in runner.train_dataloader]
            self.expected = sum(vals) / len(vals)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.iters.append((runner.epoch, sorted(outputs), dict(outputs)))


def make_cfg(root, work_dir, name, max_epochs, config=CFG, extra=()):
    register_all()
    cfg = Config.fromfile(config)
    opts = {}
    for item in toy_options(root, [f'train_cfg.max_epochs={max_epochs}',
                                   'train_cfg.val_interval=100',
                                   'train_dataloader.batch_size=2',
                                   'train_dataloader.dataset.indices=6',
                                   'default_hooks.checkpoint.max_keep_ckpts=-1',
                                   *extra])[1:]:
        k, v = item.split('=', 1)
        opts[k] = DictAction._parse_iterable(v)
    cfg.merge_from_dict(opts)
    cfg.custom_hooks[0].update(switch_epoch=1, num_clusters=4, extract_batch_size=4,
                               kmeans=dict(n_init=1))
    cfg.work_dir, cfg.experiment_name = str(work_dir), name
    cfg.randomness = dict(seed=0)
    return cfg


def make_runner(cfg, resume=None, probe=None):
    if resume:
        cfg.resume, cfg.load_from = True, resume
    runner = Runner.from_cfg(cfg)
    probe = probe or Probe()
    runner.register_hook(probe)
    return runner, probe


def hook_of(runner):
    return next(h for h in runner.hooks if type(h).__name__ == 'DebLoRAHook')


@pytest.fixture(scope='module')
def trained(toy_root, tmp_path_factory):
    work = tmp_path_factory.mktemp('deblora_run')
    runner, probe = make_runner(make_cfg(toy_root, work, 'deblora_a', 3),
                                probe=Probe(expected_loss=True))
    runner.train()
    return runner, probe, work


def test_switches_at_the_configured_epoch_and_reports(trained):
    runner, probe, work = trained
    hook = hook_of(runner)
    assert probe.epochs[0]['stage'] == 1 and probe.epochs[0]['adapters'] == ['default']
    assert probe.epochs[1]['stage'] == 2 and hook.switched_at == 1
    assert probe.epochs[1]['adapters'] == ['default', 'deblora']
    assert runner.model.backbone.active_adapters == ['default', 'deblora']
    # the feature loss exists in stage 2 only
    assert all(('loss_deblora_feat' in keys) == (ep >= 1) for ep, keys, _ in probe.iters)
    st = DebiasState.load(osp.join(work, 'deblora'))
    assert torch.equal(st.counts, hook.state.counts)
    assert st.counts.sum() > 0 and set(st.stats) == {'before', 'after'}
    for name in ('counts.csv', 'alphas.csv', 'stats.json', 'embedding.png'):
        assert osp.isfile(osp.join(work, 'deblora', name)), name
    # the final stage-1 model is saved at the switch (checkpoint interval or not)
    ckpt = torch.load(osp.join(work, 'stage1_final.pth'), map_location='cpu',
                      weights_only=True)
    assert ckpt['meta']['epoch'] == 1 and ckpt['deblora']['stage'] == 1
    assert not any('deblora' in k for k in ckpt['state_dict'])
    # the switch's numbers reach the visualizer backends (LocalVisBackend: scalars.json)
    rows = [json.loads(line) for f in glob.glob(osp.join(work, '*', 'vis_data',
                                                         'scalars.json'))
            for line in open(f)]
    row = next(r for r in rows if 'deblora/inertia' in r)
    assert row['deblora/inertia'] == pytest.approx(hook.state.inertia, rel=1e-5)
    assert any(k.startswith('deblora/alpha/') for k in row)
    assert 'deblora/before/head_tail' in row and 'deblora/after/intra_tail' in row


def test_optimizer_holds_new_adapter_not_frozen(trained):
    runner, probe, _ = trained
    s1, s2 = probe.epochs[0], probe.epochs[1]
    assert any('lora_B.default' in n for n in s1['opt'])
    new = [n for n, _ in runner.model.named_parameters() if '.deblora' in n]
    assert new and set(new) <= set(s2['opt'])
    assert not any('.default' in n or n.startswith('neck.') for n in s2['opt'])
    assert set(s2['opt']) == set(s2['trainable'])  # exactly the trainable set
    assert any(n.startswith('roi_head.') for n in s2['opt'])
    # the schedule went on: the lr keeps warming up across the switch
    assert s2['lr'] > s1['lr'] > 0


def test_first_stage2_feature_loss_is_about_lambda(trained):
    runner, probe, _ = trained
    lam = hook_of(runner).stage2.loss_weight
    assert lam / 2 <= probe.expected <= 2 * lam, probe.expected


def test_first_stage2_feature_loss_is_about_lambda_sd_tiny(toy_root, tmp_path):
    runner, probe = make_runner(make_cfg(toy_root, tmp_path, 'sd', 2, SD_CFG,
                                         ['train_dataloader.dataset.indices=4']),
                                probe=Probe(expected_loss=True))
    runner.train()
    lam = hook_of(runner).stage2.loss_weight
    assert lam / 2 <= probe.expected <= 2 * lam, probe.expected


def test_feature_loss_decreases(trained):
    # the run's own optimizer, lr and momentum: full stage-2 steps on one fixed batch pull
    # the debLoRA features toward their targets once the feature loss outweighs the task
    # loss (lambda 0.2). At the config's lambda (0.05, chosen for stability) the task loss
    # dominates these first steps and the gap grows slightly (docs/deblora.md).
    runner, _, _ = trained
    model = runner.model
    assert model._debias['loss_weight'] == hook_of(runner).stage2.loss_weight == 0.05
    assert model._debias['loss_scale'] == pytest.approx(hook_of(runner).state.loss_scale)
    batch = next(iter(runner.train_dataloader))
    losses = []
    model._debias['loss_weight'] = 0.2
    try:
        for _ in range(5):
            out = model.train_step(copy.deepcopy(batch), runner.optim_wrapper)
            losses.append(float(out['loss_deblora_feat']))
    finally:
        model._debias['loss_weight'] = 0.05
    assert losses[0] > 0
    assert losses[-1] < losses[0], losses


def test_resume_in_stage2_restores_state(trained, tmp_path):
    old, probe, work = trained
    ckpt = osp.join(work, 'epoch_2.pth')
    saved = torch.load(ckpt, map_location='cpu', weights_only=True)
    root = osp.dirname(old.cfg.train_dataloader.dataset.data_root)
    runner, _ = make_runner(make_cfg(root, tmp_path, 'deblora_b', 2), resume=ckpt)
    runner.train()  # resumes at epoch 2 = max_epochs: restores, trains nothing
    hook = hook_of(runner)
    assert hook.stage == 2 and hook.switched_at == 1
    ref = DebiasState.from_dict(saved['deblora']['state'])
    for k in ('centers', 'counts', 'class_centers', 'alphas', 'calibrated'):
        assert torch.equal(getattr(hook.state, k), getattr(ref, k)), k
    model = runner.model
    assert model.backbone.active_adapters == ['default', 'deblora']
    sd = model.state_dict()
    keys = [k for k in saved['state_dict'] if 'lora_B.deblora' in k]
    assert keys and all(torch.equal(sd[k], saved['state_dict'][k]) for k in keys)
    assert any(saved['state_dict'][k].abs().sum() > 0 for k in keys)  # trained, not init
    names = {id(p): n for n, p in model.named_parameters()}
    opt = runner.optim_wrapper.optimizer
    assert [names[id(p)] for g in opt.param_groups for p in g['params']] == \
        probe.epochs[1]['opt']
    mom = [opt.state[p]['momentum_buffer'] for g in opt.param_groups for p in g['params']
           if p in opt.state]
    assert mom and len(mom) == len(saved['optimizer']['state'])
    assert model.debias_enabled


def test_resume_from_the_switch_checkpoint(trained, tmp_path):
    old, _, work = trained
    root = osp.dirname(old.cfg.train_dataloader.dataset.data_root)
    runner, probe = make_runner(make_cfg(root, tmp_path, 'deblora_c', 2),
                                resume=osp.join(work, 'stage1_final.pth'))
    runner.train()
    hook, ref = hook_of(runner), hook_of(old).state
    assert probe.epochs[1]['stage'] == 2 and hook.switched_at == 1
    assert torch.equal(hook.state.counts, ref.counts)
    assert torch.allclose(hook.state.centers, ref.centers, atol=1e-6)


# ---------------------------------------------------------------------- checks at start
class NoIteration(Hook):
    def before_train_iter(self, runner, batch_idx, data_batch=None):
        raise AssertionError('a training iteration ran before the error')


def _roi_trans_cfg(cfg):
    """RoI Transformer (mmrotate's config) on the toy data with the toy backbone."""
    rt = Config.fromfile(ROI_TRANS).model
    rt.type = 'DebLoRACascadeRCNN'
    rt.backbone, rt.neck = cfg.model.backbone, cfg.model.neck
    rt.rpn_head.in_channels = rt.rpn_head.feat_channels = 128
    for ext, head in zip(rt.roi_head.bbox_roi_extractor, rt.roi_head.bbox_head):
        ext.out_channels, head.in_channels, head.fc_out_channels = 128, 128, 256
    for rcnn in rt.train_cfg.rcnn:
        rcnn.sampler.num = 128
    cfg.model = rt
    return cfg


def _rotated_retinanet(cfg):
    import os
    path = osp.join(osp.dirname(mmrotate.__file__), '.mim', 'configs', 'rotated_retinanet')
    name = sorted(f for f in os.listdir(path) if f.startswith('rotated-retinanet-rbox-le90'))[0]
    rr = Config.fromfile(osp.join(path, name)).model
    rr.backbone, rr.neck = cfg.model.backbone, cfg.model.neck
    rr.neck.update(start_level=1, add_extra_convs='on_input')
    rr.bbox_head.in_channels = rr.bbox_head.feat_channels = 128
    cfg.model = rr
    return cfg


def _plain_faster(cfg):
    cfg.model.type = 'mmdet.FasterRCNN'
    return cfg


def _no_lora(cfg):
    cfg.model.backbone = cfg.model.backbone.backbone
    return cfg


def _hook(**kw):
    def f(cfg):
        cfg.custom_hooks[0].update(kw)
        return cfg
    return f


def _no_annotations(cfg):
    pipe = [t for t in cfg.val_dataloader.dataset.pipeline
            if 'LoadAnnotations' not in t['type'] and 'ConvertBoxType' not in t['type']]
    cfg.custom_hooks[0]['extract_pipeline'] = pipe
    return cfg


CASES = [
    ('rotated RetinaNet', _rotated_retinanet, TypeError, 'one-stage detectors'),
    ('mmdet.FasterRCNN', _plain_faster, TypeError, "model.type='DebLoRAFasterRCNN'"),
    ('no LoRABackbone', _no_lora, TypeError, 'must be a LoRABackbone|needs model.backbone'),
    ('weighting typo', _hook(weighting='balance'), ValueError, 'DebLoRAHook.weighting'),
    ('calibrate_groups typo', _hook(calibrate_groups=['tails']), ValueError,
     'DebLoRAHook.calibrate_groups'),
    ('groups typo', _hook(groups='counts'), ValueError, 'DebLoRAHook.groups'),
    ('kmeans key typo', _hook(kmeans=dict(n_inits=3)), ValueError, 'DebLoRAHook.kmeans'),
    ('adapter rank', _hook(adapter_cfg=dict(rank=0)), ValueError,
     'DebLoRAHook.adapter_cfg.rank'),
    ('adapter rank type', _hook(adapter_cfg=dict(rank='8')), TypeError,
     'DebLoRAHook.adapter_cfg.rank'),
    ('adapter key', _hook(adapter_cfg=dict(r=8)), ValueError, 'DebLoRAHook.adapter_cfg'),
    ('adapter targets', _hook(adapter_cfg=dict(target_modules=['conv9'])), ValueError,
     'DebLoRAHook.adapter_cfg'),
    ('unknown option', _hook(lamda=0.2), ValueError, r"unknown option\(s\) \['lamda'\]"),
    ('no calibrated class', _hook(groups=dict(head=['plane'], tail=[])), ValueError,
     'would calibrate no class'),
    ('extraction without GT', _no_annotations, RuntimeError, 'dry run of the feature'),
]


@pytest.mark.parametrize('name,change,exc,match', CASES, ids=[c[0] for c in CASES])
def test_misconfig_fails_before_the_first_iteration(toy_root, tmp_path, name, change, exc,
                                                    match):
    cfg = change(make_cfg(toy_root, tmp_path, 'bad', 2))
    with pytest.raises(exc, match=match):
        runner = Runner.from_cfg(cfg)
        runner.register_hook(NoIteration())
        runner.train()


def test_roi_transformer_through_the_switch(toy_root, tmp_path):
    cfg = _roi_trans_cfg(make_cfg(toy_root, tmp_path, 'rt', 2,
                                  extra=['train_dataloader.dataset.indices=4']))
    runner, probe = make_runner(cfg)
    runner.train()
    assert probe.epochs[1]['stage'] == 2
    feat_losses = [out['loss_deblora_feat'] for ep, _, out in probe.iters if ep == 1]
    assert feat_losses and all(torch.isfinite(torch.tensor(v)) for v in feat_losses)
    assert hook_of(runner).state.class_centers.shape == (15, 128)
