"""The classification rows of the methods (configs/classification/bias_<row>.py): each
states only what differs from the LoRA row, keeps its schedule, builds and trains on a
tiny bias benchmark; the debLoRA rows switch to stage 2 on the crop dataset."""
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from mmdeblora.engine import use_checked_runner
from mmdeblora.utils.launch import build_runner, hook_keys, register_all
from tests.conftest import REPO, run_tool

CFG = osp.join(REPO, 'configs', 'classification')
ROWS = ['bias_lora_reweight', 'bias_lora_logit_adjust', 'bias_lora_smote',
        'bias_lora_dro_lt', 'bias_lora_reslt', 'bias_clora', 'bias_lora_deblora',
        'bias_clora_deblora', 'bias_lora_deblora_pool']
SCHEDULE = ('optim_wrapper', 'param_scheduler', 'train_cfg', 'train_dataloader',
            'val_dataloader', 'test_dataloader', 'data_preprocessor', 'randomness')


def load(name: str) -> Config:
    return Config.fromfile(osp.join(CFG, name + '.py'))


@pytest.mark.parametrize('row', ROWS)
def test_row_keeps_the_lora_rows_schedule_and_data(row):
    lora, cfg = load('bias_lora').to_dict(), load(row).to_dict()
    for key in SCHEDULE:
        assert cfg[key] == lora[key], key
    assert cfg['custom_hooks'][0] == dict(type='TrainableParamsHook')


def test_debias_rows_share_their_options_and_the_lambda0_path():
    names = ('bias_lora_deblora', 'bias_clora_deblora')
    lora_h, clora_h = (load(n).custom_hooks[1] for n in names)
    assert lora_h['type'] == clora_h['type'] == 'DebLoRAHook'
    assert clora_h.pop('stage1_adapters') == ['clora_head', 'clora_middle', 'clora_tail']
    assert lora_h == clora_h
    pool_h = load('bias_lora_deblora_pool').custom_hooks[1]
    assert pool_h.pop('cluster_pool') == dict(
        folders=dict(train='train_balanced', val='val', test='test'))
    assert pool_h == load('bias_lora_deblora').custom_hooks[1]
    assert load('bias_lora').train_cfg.max_epochs == 30 and lora_h['switch_epoch'] == 20
    cfg = load('bias_lora_deblora')
    cfg.merge_from_dict(hook_keys(cfg, {'DebLoRAHook.loss_weight': 0.0}))  # the control
    assert cfg.custom_hooks[1]['loss_weight'] == 0.0
    assert cfg.custom_hooks[1]['type'] == 'DebLoRAHook'


def tiny(row: str, root: str, work_dir: str, extra=None) -> Config:
    cfg = load(row)
    opts = {'model.backbone.pretrained': None, 'train_cfg.max_epochs': 1,
            'train_cfg.val_interval': 10, 'train_dataloader.batch_size': 512,
            'default_hooks.checkpoint': None, 'default_hooks.logger.interval': 1,
            'optim_wrapper.optimizer.lr': 0.01}
    for k in ('train', 'val', 'test'):
        opts[f'{k}_dataloader.dataset.data_root'] = root + '/target/'
        opts[f'{k}_dataloader.dataset.cache_dir'] = root + '/crops'
    if 'deblora' in row:  # one stage-1 iteration, then the switch, one stage-2 iteration
        opts.update({'train_cfg.max_epochs': 2, 'custom_hooks.1.switch_epoch': 1,
                     'custom_hooks.1.num_clusters': 4, 'custom_hooks.1.plot': None})
    opts.update(extra or {})
    cfg.merge_from_dict(opts)
    cfg.work_dir = work_dir
    use_checked_runner(cfg, False)
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize('row', ROWS)
def test_row_builds_and_trains_one_iteration(row, bias_target, tmp_path):
    register_all()
    runner = build_runner(tiny(row, bias_target, str(tmp_path)))
    runner.train()
    model = runner.model
    with open(tmp_path / 'trainable_params.json') as fh:
        params = json.load(fh)
    labels = [runner.train_dataloader.dataset.get_data_info(i)['gt_label']
              for i in range(len(runner.train_dataloader.dataset))]
    counts = np.bincount(labels, minlength=15).tolist()
    lora_backbone = 70040  # rank-8 adapters of the LoRA row
    if row == 'bias_clora' or row == 'bias_clora_deblora':
        assert params['trainable.backbone'] == 3 * lora_backbone
    else:
        assert params['trainable.backbone'] == lora_backbone
    if 'deblora' not in row:
        assert runner.iter == 1
    if row in ('bias_lora_reweight', 'bias_lora_logit_adjust'):
        assert model.head.loss_module.class_counts == counts  # ClassStatsHook -> the loss
        with open(tmp_path / 'class_stats.json') as fh:
            assert list(json.load(fh)['counts'].values()) == counts
    if row == 'bias_lora_smote':
        assert model.head.class_counts == counts
        assert model.head.bank.filled.sum() > 0
        assert model.head.bank.unique  # one entry per crop (the ring: unique_samples=False)
    if row == 'bias_lora_reslt':
        assert model.head.branch_classes is not None
    if row == 'bias_lora_dro_lt':
        assert 'train/loss_dro' in runner.message_hub.log_scalars
    if 'deblora' in row:
        hook = next(h for h in runner.hooks if type(h).__name__ == 'DebLoRAHook')
        assert hook.stage == 2 and runner.iter == 2
        assert model.backbone.active_adapters[-1] == 'deblora'
        assert osp.isfile(tmp_path / 'stage1_final.pth')
        feat_loss = runner.message_hub.get_scalar('train/loss_deblora_feat').current()
        assert np.isfinite(feat_loss) and feat_loss > 0


@pytest.mark.slow
def test_lambda0_control_runs_stage2_without_the_feature_loss(bias_target, tmp_path):
    register_all()
    cfg = tiny('bias_lora_deblora', bias_target, str(tmp_path))
    cfg.merge_from_dict(hook_keys(cfg, {'DebLoRAHook.loss_weight': 0}))  # the control
    runner = build_runner(cfg)
    runner.train()
    hook = next(h for h in runner.hooks if type(h).__name__ == 'DebLoRAHook')
    assert hook.stage == 2 and hook.stage2.loss_weight == 0
    assert runner.message_hub.get_scalar('train/loss_deblora_feat').current() == 0
    trainable = {n for n, p in runner.model.named_parameters() if p.requires_grad}
    assert any('lora_B.deblora' in n for n in trainable)
    assert not any('.default.' in n for n in trainable)
    assert torch.isfinite(torch.tensor(
        runner.message_hub.get_scalar('train/loss').current()))
    # where the switch's calibration moved each tail class (tools/analysis/bias_diagnostics)
    out = str(tmp_path / 'calibration.json')
    opts = ['model.backbone.pretrained=None']
    for k in ('train', 'val', 'test'):
        opts += [f'{k}_dataloader.dataset.data_root={bias_target}/target/',
                 f'{k}_dataloader.dataset.cache_dir={bias_target}/crops']
    diag = run_tool('analysis/bias_diagnostics.py', osp.join(CFG, 'bias_lora_deblora.py'),
                    str(tmp_path / 'stage1_final.pth'), '--deblora-state',
                    str(tmp_path / 'deblora'), '--out', out, '--cfg-options', *opts)
    assert 'the switch clustered (its logged statistics): yes' in diag.stdout
    with open(out) as fh:
        res = json.load(fh)
    calibrated = [n for n, a in zip(hook.state.class_names, hook.state.alphas) if a > 0]
    assert sorted(res['per_class']) == sorted(calibrated)
    assert res['siblings']['helicopter'] == 'plane'
    for r in res['per_class'].values():
        assert r['alpha'] > 0 and 0 <= r['own_nearer_after'] <= 1
        assert r['margin_after'] != r['margin_before']  # calibrated: the targets moved
    agg = run_tool('analysis/bias_diagnostics.py', '--aggregate', out, out)
    assert 'h nearer sibling' in agg.stdout
    # a stage-2 checkpoint is diagnosed with its adapters (as tools/test.py loads it)
    runner.save_checkpoint(str(tmp_path), 'stage2.pth')
    stage2 = str(tmp_path / 'stage2.pth')
    out2 = str(tmp_path / 'diag_stage2.json')
    run_tool('analysis/bias_diagnostics.py', osp.join(CFG, 'bias_lora_deblora.py'), stage2,
             '--oracle-checkpoint', stage2, '--oracle-config',
             osp.join(CFG, 'bias_lora_deblora.py'), '--k', '4', '--out', out2,
             '--cfg-options', *opts)
    with open(out2) as fh:
        res2 = json.load(fh)
    assert res2['prechecks']['1_tail_f1_gap'] == pytest.approx(0)
    assert set(res2['model']['distances']) == {'head_tail', 'tail_tail', 'intra_tail'}


@pytest.mark.slow
def test_clora_deblora_with_the_train_and_test_tools(bias_target, tmp_path):
    """tools/train.py through the switch, then tools/test.py on the stage-2 checkpoint
    (re-enters stage 2 from the checkpoint; the class-to-route map comes with it)."""
    cfg = osp.join(CFG, 'bias_clora_deblora.py')
    opts = ['--cfg-options', 'model.backbone.pretrained=None', 'train_cfg.max_epochs=2',
            'train_dataloader.batch_size=512', 'optim_wrapper.optimizer.lr=0.01',
            'custom_hooks.1.switch_epoch=1', 'custom_hooks.1.num_clusters=4',
            'custom_hooks.1.plot=None']
    for k in ('train', 'val', 'test'):
        opts += [f'{k}_dataloader.dataset.data_root={bias_target}/target/',
                 f'{k}_dataloader.dataset.cache_dir={bias_target}/crops']
    wd = str(tmp_path)
    train = run_tool('train.py', cfg, '--work-dir', wd, *opts)
    assert "adapters ['clora_head', 'clora_middle', 'clora_tail', 'deblora'] active" \
        in train.stdout
    test = run_tool('test.py', cfg, osp.join(wd, 'epoch_2.pth'), '--work-dir', wd, *opts)
    assert 're-entering stage 2' in test.stdout
    for key in ('head_f1', 'middle_f1', 'tail_f1', 'macro_f1'):
        assert f'{key}: ' in test.stdout, key


def test_official_dro_lt_row_splits_the_lora_rows_budget():
    """CE, DRO-LT, classifier phases inside the LoRA row's 30 epochs and data; phase (a) is
    the LoRA recipe with its cosine ending at the switch."""
    lora, cfg = load('bias_lora').to_dict(), load('bias_lora_dro_lt_official').to_dict()
    for key in set(SCHEDULE) - {'param_scheduler'}:
        assert cfg[key] == lora[key], key
    (hook, ) = [h for h in cfg['custom_hooks'] if h['type'] == 'TrainingPhasesHook']
    dro, crt = hook['phases']
    assert (dro['begin'], crt['begin'], cfg['train_cfg']['max_epochs']) == (20, 28, 30)
    assert cfg['param_scheduler'][-1]['end'] == dro['begin']  # CE finished at the switch
    assert dro['sampler']['type'] == 'mmdet.ClassAwareSampler' and 'sampler' not in crt
    assert dro['model_options'] == dict(dro=True, ce_weighting='lt')
    assert crt['trainable'] == ['head.fc'] and crt['eval_modules'] == ['backbone']
    assert cfg['model']['head']['dro'] is False  # phase (a) is plain CE


class DROLoss(Hook):
    def __init__(self):
        self.losses = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append((runner.epoch, float(outputs['loss_dro'].detach())))


@pytest.mark.slow
def test_official_dro_lt_row_trains_through_its_phases(bias_target, tmp_path):
    register_all()
    extra = {'train_cfg.max_epochs': 3, 'custom_hooks.2.phases.0.begin': 1,
             'custom_hooks.2.phases.1.begin': 2, 'train_dataloader.batch_size': 16}
    runner = build_runner(tiny('bias_lora_dro_lt_official', bias_target, str(tmp_path),
                               extra))
    probe = DROLoss()
    runner.register_hook(probe)
    runner.train()
    model = runner.model
    assert type(runner.train_dataloader.sampler).__name__ == 'ClassAwareSampler'
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        {'head.fc.weight', 'head.fc.bias'}
    assert model.head.class_counts is not None  # ClassStatsHook -> the 'lt' weighting
    # the robust loss only in the DRO-LT phase
    assert {e for e, v in probe.losses if v > 0} == {1}
    assert not model.backbone.training  # eval mode kept in the classifier phase


@pytest.mark.slow
def test_smote_row_with_unique_samples_keys_the_bank_by_crop(bias_target, tmp_path):
    """sample_idx reaches the head through the crop data set and PackInputs: after two
    epochs every class holds each of its crops once (a ring would hold both views)."""
    register_all()
    runner = build_runner(tiny('bias_lora_smote', bias_target, str(tmp_path), {
        'model.head.unique_samples': True, 'train_cfg.max_epochs': 2}))
    runner.train()
    bank = runner.model.head.bank
    counts = runner.model.head.class_counts
    assert bank.filled.tolist() == [min(n, bank.size) for n in counts]
    for c, n in enumerate(counts):
        ids = bank.ids[c, :bank.filled[c]].tolist()
        assert len(set(ids)) == len(ids) and min(ids, default=0) >= 0
