"""DebLoRAHook on tiny toy runs: checks before epoch 0, the switch, the optimizer, the loss
scale, what it writes, resume, and RoI Transformer."""
import copy
import csv
import glob
import math
import os.path as osp

import mmrotate
import pytest
import torch
from mmengine.config import Config, DictAction
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmdeblora.deblora import DebiasState
from mmdeblora.utils.launch import register_all
from tests.conftest import REPO, toy_options, vis_scalars

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
    # a visualizer of its own: mmrotate's runtime names every one 'visualizer', and mmengine
    # hands a later runner the first instance of a name (with that run's save_dir)
    cfg.visualizer.name = f'vis_{name}_{osp.basename(str(work_dir))}'
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
    rows = vis_scalars(work)
    row = next(r for r in rows if 'deblora/inertia' in r)
    assert row['deblora/inertia'] == pytest.approx(hook.state.inertia, rel=1e-5)
    assert any(k.startswith('deblora/alpha/') for k in row)
    assert 'deblora/before/head_tail' in row and 'deblora/after/intra_tail' in row


def test_target_reach_logged_every_stage2_epoch(trained):
    """Epochs 1 and 2 are stage 2: after each, the training batches' mean gaps; after the
    last, the exact measurement over the training set too. To the log rows, the
    visualizer scalars, deblora/reach.csv and the checkpoint (so a resume keeps them)."""
    runner, probe, work = trained
    hook = hook_of(runner)
    assert [r['stage2_epochs'] for r in hook.reach] == [1, 2]
    with open(osp.join(work, 'deblora', 'reach.csv')) as f:
        rows = list(csv.DictReader(f))
    assert [int(r['epoch']) for r in rows] == [2, 3]
    assert rows[0]['cal_gap'] == '' and rows[1]['cal_gap'] != ''  # exact: the last only
    # the batches' gaps: the mean of what the stage-2 loss logged in that epoch
    logged = [o['deblora_cal_gap'] for ep, _, o in probe.iters
              if ep == 2 and 'deblora_cal_gap' in o]
    assert logged and float(rows[1]['train_deblora_cal_gap']) == pytest.approx(
        sum(float(v) for v in logged) / len(logged), rel=1e-4)
    last = hook.reach[-1]
    assert last['num_cal'] > 0 and last['num_other'] > 0
    assert math.isfinite(last['cal_gap']) and last['cal_gap'] > 0
    assert float(rows[-1]['cal_gap']) == pytest.approx(last['cal_gap'], rel=1e-5)
    # the drift of the others is measured: stage 2 changed them (the adapter trained)
    assert last['other_drift'] > 0
    vis = vis_scalars(work)
    assert sum('deblora/reach_cal_gap' in r for r in vis) == 1
    assert sum('deblora/reach_train_deblora_cal_gap' in r for r in vis) == 2
    saved = torch.load(osp.join(work, 'epoch_3.pth'), map_location='cpu', weights_only=True)
    assert [r['epoch'] for r in saved['deblora']['reach']] == [2, 3]


def test_measure_reach_at_the_switch_is_the_start(trained):
    """With the new adapter back at its initial B = 0 the stage-2 model is the stage-1
    model: the calibrated gap is exactly its value at the switch, the others' drift 0."""
    from mmdeblora.engine import build_extraction_loader, measure_reach
    runner, _, _ = trained
    model, hook = copy.deepcopy(runner.model), hook_of(runner)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if 'lora_B.deblora' in n:
                p.zero_()
    loader = build_extraction_loader(runner.cfg, hook.settings)
    reach = measure_reach(model, loader, progress=False)
    assert reach['cal_gap'] == pytest.approx(1.0, abs=1e-6)
    assert reach['other_drift'] == pytest.approx(0.0, abs=1e-10)
    # cal_gap_s: the gap in units of s, the mean gap of a calibrated instance
    assert reach['cal_gap_s'] == pytest.approx(1.0, rel=0.05)


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
    plan = model.debias_plan
    assert plan.loss_weight == hook_of(runner).stage2.loss_weight == 0.05
    assert plan.loss_scale == pytest.approx(hook_of(runner).state.loss_scale)
    batch = next(iter(runner.train_dataloader))
    losses = []
    model.debias_plan = plan.replace(loss_weight=0.2)
    try:
        for _ in range(5):
            out = model.train_step(copy.deepcopy(batch), runner.optim_wrapper)
            losses.append(float(out['loss_deblora_feat']))
    finally:
        model.debias_plan = plan
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


def test_stage2_optimizer_and_schedule_of_its_own(toy_root, tmp_path):
    """stage2_optim_wrapper: AdamW replaces the run's SGD at the switch, over exactly the
    trainable set, built by the config's constructor (clipping kept), with its own
    schedule; a resume from a stage-2 checkpoint restores AdamW and its moments."""
    opts = dict(stage2_optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3,
                                                         weight_decay=0.0)),
                stage2_param_scheduler=[dict(type='MultiStepLR', milestones=[1], gamma=0.5,
                                             by_epoch=True)])
    cfg = make_cfg(toy_root, tmp_path / 'a', 'adamw', 3)
    cfg.custom_hooks[0].update(opts)
    runner, probe = make_runner(cfg)
    runner.train()
    opt = runner.optim_wrapper.optimizer
    assert type(opt).__name__ == 'AdamW'
    assert runner.optim_wrapper.clip_grad_kwargs == dict(cfg.optim_wrapper.clip_grad)
    # its epochs count from the switch: stage-2 epoch 0 at the base lr, then halved
    assert probe.epochs[1]['lr'] == pytest.approx(1e-3)
    assert probe.epochs[2]['lr'] == pytest.approx(5e-4)
    assert set(probe.epochs[1]['opt']) == set(probe.epochs[1]['trainable'])
    assert [r['stage2_epochs'] for r in hook_of(runner).reach] == [1, 2]
    assert 'cal_gap' in hook_of(runner).reach[-1]

    ckpt = osp.join(tmp_path / 'a', 'epoch_2.pth')
    saved = torch.load(ckpt, map_location='cpu', weights_only=True)
    cfg = make_cfg(toy_root, tmp_path / 'b', 'adamw_resumed', 2)
    cfg.custom_hooks[0].update(opts)
    resumed, _ = make_runner(cfg, resume=ckpt)
    resumed.train()  # epoch 2 = max_epochs: restores, trains nothing
    opt = resumed.optim_wrapper.optimizer
    assert type(opt).__name__ == 'AdamW'
    moments = [opt.state[p]['exp_avg'] for g in opt.param_groups for p in g['params']]
    want = [v['exp_avg'] for v in saved['optimizer']['state'].values()]
    assert len(moments) == len(want) and all(torch.equal(a, b) for a, b in zip(moments, want))
    assert resumed.param_schedulers[0].last_step == 1
    assert [r['epoch'] for r in hook_of(resumed).reach] == [2]


def test_augment_mode_through_the_switch(toy_root, tmp_path):
    """mode='augment': at the switch no adapter is added; stage 2 trains the heads only
    (backbone and neck frozen), with the box head's loss on calibrated copies."""
    cfg = make_cfg(toy_root, tmp_path, 'augment', 2)
    cfg.custom_hooks[0].update(mode='augment')
    runner, probe = make_runner(cfg)
    runner.train()
    assert probe.epochs[1]['adapters'] == ['default']
    opt = probe.epochs[1]['opt']
    assert opt and all(n.startswith(('roi_head.', 'rpn_head.')) for n in opt)
    keys = [k for ep, k, _ in probe.iters if ep == 1]
    assert keys and all('loss_deblora_aug' in k and 'loss_deblora_feat' not in k
                        for k in keys)
    assert hook_of(runner).reach == []  # no adapter pulled: nothing to measure


def test_cluster_pool_joins_the_clustering_without_its_labels(toy_root, tmp_path):
    """cluster_pool: the GT instances of the pool's scenes (here the first 3 training
    images) join K-means and the cluster sizes, not the class counts."""
    cfg = make_cfg(toy_root, tmp_path, 'pool', 2)
    cfg.custom_hooks[0].update(cluster_pool=dict(indices=3))
    runner, _ = make_runner(cfg)
    runner.train()
    st = hook_of(runner).state
    rows = list(csv.DictReader(open(osp.join(tmp_path, 'deblora', 'counts.csv'))))
    pool = sum(int(r['unlabelled']) for r in rows)
    # the pool's instances: the GT boxes of the first 3 of the 6 training images
    ds = runner.train_dataloader.dataset
    expected = sum(len(ds.get_data_info(i)['instances']) for i in range(3))
    assert 0 < pool == int(st.unlabelled_counts.sum()) == expected
    assert int(st.counts.sum()) == sum(len(ds.get_data_info(i)['instances'])
                                       for i in range(len(ds)))
    assert sum(int(r['size']) for r in rows) == int(st.counts.sum()) + pool
    assert DebiasState.load(osp.join(tmp_path, 'deblora')).unlabelled_counts.sum() == pool


def test_warns_when_stage2_does_not_reach_its_targets(toy_root, tmp_path):
    """lr 0 in stage 2: nothing moves, the calibrated gap stays at 1, and the run says so."""
    cfg = make_cfg(toy_root, tmp_path, 'frozen', 2)
    cfg.custom_hooks[0].update(stage2_optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)))
    runner, _ = make_runner(cfg)
    runner.train()
    row = hook_of(runner).reach[-1]
    assert row['cal_gap'] == pytest.approx(1.0, abs=1e-6)
    log = open(glob.glob(osp.join(str(tmp_path), '*', '*.log'))[0]).read()
    assert 'did not train the de-biased features' in log


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
    ('no calibrated class', _hook(groups='auto', group_thresholds=dict(head=0.5, tail=0.0)),
     ValueError, 'would calibrate no class'),  # no share below 0: 'auto' leaves tail empty
    ('group spec leaving classes out', _hook(groups=dict(head=['plane'], tail=[])),
     ValueError, r"class\(es\) \['baseball-diamond'.* are in no group"),
    ('stage-2 optimizer type', _hook(stage2_optim_wrapper=dict(
        optimizer=dict(type='AdamWW', lr=1e-4))), ValueError,
     'DebLoRAHook.stage2_optim_wrapper cannot be built'),
    ('stage-2 optimizer argument', _hook(stage2_optim_wrapper=dict(
        optimizer=dict(type='AdamW', lr=1e-4, momentum=0.9))), ValueError,
     'DebLoRAHook.stage2_optim_wrapper cannot be built'),
    ('stage-2 optimizer shape', _hook(stage2_optim_wrapper='AdamW'), TypeError,
     'DebLoRAHook.stage2_optim_wrapper must be'),
    ('stage-2 scheduler type', _hook(stage2_param_scheduler=dict(type='CosineLRR')),
     ValueError, 'DebLoRAHook.stage2_param_scheduler cannot be built'),
    ('reach interval', _hook(reach_interval=-1), ValueError, 'DebLoRAHook.reach_interval'),
    ('mode typo', _hook(mode='augmented'), ValueError, 'DebLoRAHook.mode'),
    ('augment with max pooling', _hook(mode='augment', pool='max'), ValueError,
     "pool='avg'"),
    ('extraction without GT', _no_annotations, RuntimeError, 'dry run of the feature'),
    ('replay without a feature loss', _hook(mode='augment', replay=2), ValueError,
     'DebLoRAHook.replay=2 feeds the feature loss'),
    ('replay count', _hook(replay=1.5), TypeError, 'DebLoRAHook.replay must be an integer'),
    ('cluster pool shape', _hook(cluster_pool='val'), TypeError,
     'DebLoRAHook.cluster_pool must be a non-empty dict'),
    ('cluster pool pipeline', _hook(cluster_pool=dict(pipeline=[])), ValueError,
     'DebLoRAHook.cluster_pool takes the extraction pipeline'),
    ('cluster pool that cannot be built', _hook(cluster_pool=dict(data_root='/nonexistent')),
     ValueError, r'DebLoRAHook.cluster_pool=.*(cannot be built|holds no instance)'),
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


def test_checks_before_the_run_leave_the_random_state_as_they_found_it(toy_root, tmp_path):
    """before_run's dry run (the extraction loader's first batch draws its base seed) comes
    before mmengine initialises the weights: the random state is put back, so that a
    debLoRA run starts from the same weights and data order as the LoRA run of its seed
    (the detection table's shared stage 1 and every paired debLoRA - LoRA difference)."""
    from mmdeblora.engine.hooks.random_state_hook import capture_random_state
    runner, _ = make_runner(make_cfg(toy_root, tmp_path, 'rng_before_run', 2))
    runner._train_loop = runner.build_train_loop(runner._train_loop)
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    before = capture_random_state()
    hook_of(runner).before_run(runner)
    after = capture_random_state()
    assert hook_of(runner)._loader is not None  # the dry run happened
    assert torch.equal(before['torch'], after['torch'])
    assert torch.equal(before['numpy']['keys'], after['numpy']['keys'])
    assert before['numpy']['pos'] == after['numpy']['pos']
    assert torch.equal(before['python']['state'], after['python']['state'])


def test_replay_source_is_checked_before_the_run(toy_root, tmp_path, monkeypatch):
    """A training set the replay cannot index fails in before_run (before stage 1), not at
    the switch epochs later."""
    cfg = make_cfg(toy_root, tmp_path, 'replay_source', 2)
    cfg.custom_hooks[0].update(replay=2)
    runner, _ = make_runner(cfg)
    runner._train_loop = runner.build_train_loop(runner._train_loop)
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    monkeypatch.setattr(runner.train_dataloader.dataset, 'get_data_info', None)
    with pytest.raises(TypeError, match='DebLoRAHook.replay needs a training dataset'):
        hook_of(runner).before_run(runner)


def _final_weights(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_tail_replay_adds_calibrated_images_and_leaves_the_control_alone(toy_root, tmp_path):
    """replay=2: every stage-2 batch gets 2 more training images with a calibrated instance
    (and stage 1 none); lambda 0 with replay ends bit-identical to lambda 0 without (the
    replay draws with its own random state; the model skips it), lambda > 0 does not. The
    lambda > 0 run's training set is wrapped in mmengine's RepeatDataset (no get_cat_ids):
    the replay reads the labels from the data infos."""
    class Sizes(Hook):
        priority = 'LOWEST'

        def __init__(self):
            self.sizes = []

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self.sizes.append((runner.epoch, len(data_batch['data_samples']), [
                bool(s.metainfo.get('deblora_replay')) for s in data_batch['data_samples']]))

    runs = {}
    for name, kw in (('l0', dict(loss_weight=0.0)), ('l0_r2', dict(loss_weight=0.0, replay=2)),
                     ('r2', dict(replay=2))):
        cfg = make_cfg(toy_root, tmp_path / name, name, 2)
        cfg.custom_hooks[0].update(kw)
        if name == 'r2':
            cfg.train_dataloader.dataset = dict(type='RepeatDataset', times=1,
                                                dataset=cfg.train_dataloader.dataset)
        runner, _ = make_runner(cfg)
        sizes = Sizes()
        runner.register_hook(sizes)
        runner.train()
        runs[name] = (runner, sizes.sizes)
    hook = hook_of(runs['r2'][0])
    cal = hook.state.calibrated.tolist()
    ds = runs['r2'][0].train_dataloader.dataset
    assert type(ds).__name__ == 'RepeatDataset'
    inner = ds.dataset
    assert hook._replay.indices == [i for i in range(len(inner))
                                    if any(cal[c] for c in inner.get_cat_ids(i))]
    assert 0 < len(hook._replay.indices) < len(ds)
    for epoch, n, marks in runs['r2'][1]:
        own = n - sum(marks)
        assert sum(marks) == (2 if epoch == 1 else 0) and not any(marks[:own])
    assert all(not any(m) for _, _, m in runs['l0'][1])
    a, b, c = (_final_weights(runs[k][0]) for k in ('l0', 'l0_r2', 'r2'))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if 'lora_B.deblora' in k)
    log = open(glob.glob(osp.join(str(tmp_path / 'r2'), '*', '*.log'))[0]).read()
    assert 'tail replay, 2 of' in log
