"""DivergenceHook: a diverging run stops before it writes a bad checkpoint or rotates a good
one away, in every run of our tools without being listed in a config."""
import glob
import os.path as osp
import re
import shutil

import pytest
import torch
from mmengine.config import Config

from mmdeblora.engine import DivergenceError, DivergenceHook, use_checked_runner
from tests.conftest import REPO, TOY_CFG, run_tool, toy_options
from tests.engine.test_checked_runner import PLAIN, build, make_cfg

BY_ITER = ['default_hooks.checkpoint.by_epoch=False', 'default_hooks.checkpoint.interval=1',
           'default_hooks.checkpoint.max_keep_ckpts=2', 'train_dataloader.batch_size=1',
           'train_dataloader.sampler.shuffle=False']


def _finite(path):
    state = torch.load(path, map_location='cpu', weights_only=True)['state_dict']
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.slow
def test_nan_batch_stops_the_run_and_keeps_the_good_checkpoints(toy_root, tmp_path):
    """issue 10: a zero-area box (let through with min_box_area=0) gave `loss: nan`, NaN
    checkpoints, exit code 0, and max_keep_ckpts deleted the last good ones."""
    root = tmp_path / 'data'
    shutil.copytree(toy_root, root)
    fourth = sorted((root / 'trainval' / 'annfiles').iterdir())[3]
    with open(fourth, 'a') as fh:
        fh.write('100 100 100 100 100 100 100 100 tennis-court 0\n')
    wd = tmp_path / 'wd'
    proc = run_tool('train.py', TOY_CFG, '--work-dir', str(wd), *toy_options(str(root), [
        'train_dataloader.dataset.indices=4', 'train_dataloader.dataset.min_box_area=0',
        *BY_ITER]), check=False)
    assert proc.returncode != 0
    assert ('DivergenceError: DivergenceHook: training diverged: the loss is nan at epoch 1, '
            'iteration 4') in proc.stderr, proc.stderr[-3000:]
    assert f'the last checkpoint, {wd}/iter_3.pth, is kept' in proc.stderr
    kept = sorted(osp.basename(p) for p in glob.glob(str(wd / '*.pth')))
    assert kept == ['iter_2.pth', 'iter_3.pth']  # no iter_4.pth, nothing rotated away
    assert all(_finite(wd / name) for name in kept)


@pytest.mark.parametrize('bound,message', [
    ('max_loss=10000', r'the loss [\d.e+]+ exceeds max_loss=10000'),
    ('max_grad_norm=1000', r'the gradient norm [\d.e+]+ exceeds max_grad_norm=1000'),
])
def test_lr_10_explodes_and_a_bound_stops_it(toy_root, tmp_path, bound, message):
    """issue 10: lr 10 takes the loss to 1e11 (finite); the configured bound stops it at
    the first iteration above it, before that iteration's checkpoint."""
    cfg = make_cfg(PLAIN, toy_root, tmp_path, [
        'optim_wrapper.optimizer.lr=10', 'param_scheduler=[]',
        'train_dataloader.dataset.indices=3', f'divergence_guard.{bound}', *BY_ITER])
    runner = build(cfg)
    with pytest.raises(DivergenceError) as err:
        runner.train()
    assert re.search(f'{message} at epoch 1, iteration 2 ', str(err.value)), err.value
    assert sorted(osp.basename(p) for p in glob.glob(str(tmp_path / '*.pth'))) == \
        ['iter_1.pth']


def test_grad_norm_bound_needs_clip_grad(toy_root, tmp_path):
    cfg = make_cfg(PLAIN, toy_root, tmp_path, ['divergence_guard.max_grad_norm=1000'])
    cfg.optim_wrapper.clip_grad = None
    with pytest.raises(ValueError, match='max_grad_norm needs optim_wrapper.clip_grad'):
        build(cfg).train()


def test_a_checkpoint_with_nan_weights_is_not_written(toy_root, tmp_path):
    runner = build(make_cfg(PLAIN, toy_root, tmp_path))
    with torch.no_grad():
        runner.model.roi_head.bbox_head.fc_cls.weight[0, 0] = float('nan')
    with pytest.raises(DivergenceError, match=r'1 weight tensor\(s\) are not finite '
                       r'\(roi_head.bbox_head.fc_cls.weight\)'):
        runner.save_checkpoint(str(tmp_path), 'epoch_1.pth', save_optimizer=False,
                               save_param_scheduler=False)
    assert not osp.exists(tmp_path / 'epoch_1.pth')


def test_the_guard_is_on_by_default_and_can_be_switched_off(toy_root, tmp_path):
    def guards(extra=(), custom_hooks=None):
        cfg = make_cfg(PLAIN, toy_root, tmp_path, extra)
        if custom_hooks is not None:
            cfg.custom_hooks = custom_hooks
        return [h for h in build(cfg).hooks if isinstance(h, DivergenceHook)]
    assert len(guards()) == 1
    assert guards(['divergence_guard.max_loss=5'])[0].max_loss == 5
    assert guards(['divergence_guard=None']) == []
    # listed in custom_hooks with its own options: that one, not a second
    listed = guards(custom_hooks=[dict(type='DivergenceHook', max_loss=7)])
    assert [h.max_loss for h in listed] == [7]


def test_every_shipped_config_runs_guarded_through_our_tools():
    """mmengine replaces list-valued custom_hooks on inheritance, so the guard comes from
    the runner our tools pick: no shipped config may pick another or switch it off."""
    configs = sorted(glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True))
    configs = [c for c in configs if '_base_' not in c]
    assert len(configs) > 10
    for path in configs:
        cfg = Config.fromfile(path)
        use_checked_runner(cfg)
        assert cfg.runner_type == 'CheckedRunner', path
        assert cfg.get('divergence_guard', {}) not in (None, False), path
