"""RandomStateHook: a run killed at any iteration and resumed ends bit-identical to the
uninterrupted run (tools/train.py, both debLoRA stages); the state it saves and restores."""
import glob
import logging
import os.path as osp
import random
import sys

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from torch import nn
from torch.utils.data import Dataset

from mmdeblora.engine import CheckedRunner
from mmdeblora.engine.hooks import random_state_hook
from mmdeblora.engine.hooks.random_state_hook import (RandomStateHook, capture_random_state,
                                                      restore_random_state)
from tests.conftest import REPO, run_killed, run_tool, toy_options

DEBLORA_CFG = osp.join(REPO, 'configs', 'deblora', 'oriented_rcnn_r18_deblora_toy.py')


def _draws():
    cuda = torch.rand(2, device='cuda').tolist() if torch.cuda.is_available() else None
    return (random.random(), float(np.random.rand()), float(np.random.randn()),
            torch.rand(3).tolist(), torch.randn(2).tolist(), cuda)


def test_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    np.random.randn()  # a cached gaussian in numpy's state
    state = capture_random_state()
    first = _draws()
    torch.save(dict(random_state=state), tmp_path / 'ckpt.pth')
    loaded = torch.load(tmp_path / 'ckpt.pth', map_location='cpu', weights_only=True)
    assert _draws() != first
    assert restore_random_state(loaded['random_state']) == []
    assert _draws() == first


# ---------------------------------------------------------------------- a tiny runner
class TinyModel(BaseModel):
    """Dropout draws from torch's generator in the main process."""

    def __init__(self):
        super().__init__()
        self.fc, self.drop, self.out = nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        y = self.out(self.drop(self.fc(inputs))).squeeze(1)
        return dict(loss=((y - targets) ** 2).mean()) if mode == 'loss' else y


class NoisyData(Dataset):
    """Augmentation drawn from numpy's global generator, in the loader's worker."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        x = torch.full((4, ), i / 8) + torch.from_numpy(np.random.rand(4)).float()
        return dict(inputs=x, targets=torch.tensor(float(i % 3)))


class ValidationDraws(Hook):
    """Draws after the checkpoint is written, as a validation does (its loader's base
    seed comes from torch's generator)."""
    priority = 'LOWEST'

    def after_train_epoch(self, runner):
        torch.rand(1), np.random.rand(), random.random()


class Crash(Hook):
    """Dies in the middle of epoch 3."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.epoch == 2 and batch_idx == 1:
            raise KeyboardInterrupt('killed')


def tiny_runner(work, exact_resume, resume=None, crash=False, seed=0, **kwargs):
    loader = dict(dataset=NoisyData(), batch_size=2, num_workers=1, persistent_workers=True,
                  sampler=dict(type='DefaultSampler', shuffle=True),
                  collate_fn=dict(type='default_collate'))
    torch.manual_seed(0)  # the same initial weights in every run
    args = dict(
        model=TinyModel(), work_dir=str(work), train_dataloader=loader,
        train_cfg=dict(by_epoch=True, max_epochs=3),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=[ValidationDraws()] + ([Crash()] if crash else []),
        randomness=dict(seed=seed), resume=resume is not None, load_from=resume,
        cfg=dict(exact_resume=exact_resume, divergence_guard=None),
        experiment_name=f'{osp.basename(str(work))}_{resume is not None}_{crash}')
    args.update(kwargs)
    return CheckedRunner(**args)


def logged(runner):
    """The messages the runner's logger emits from now on."""
    msgs = []
    handler = logging.Handler()
    handler.emit = lambda record: msgs.append(record.getMessage())
    runner.logger.addHandler(handler)
    return msgs


def final_weights(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


# (name, exact_resume, the resumed run's seed, patch, bit-identical): the run's seed was
# drawn by mmengine (randomness.seed=None, as in the README's main job) -> the resumed run
# draws another one; mmengine restores the seed but the data loader was built before
VARIANTS = [('hook', {}, 0, None, True), ('no hook', None, 0, None, False),
            ('persistent workers kept', dict(restart_workers=False), 0, None, False),
            ('seed drawn', {}, None, None, True),
            ('seed drawn, loader seeds not restored', {}, None, 'no_loader_seeds', False)]


@pytest.mark.parametrize('name,exact_resume,resume_seed,patch,exact', VARIANTS,
                         ids=[v[0] for v in VARIANTS])
def test_resume_after_a_crash_is_exact(tmp_path, monkeypatch, name, exact_resume,
                                       resume_seed, patch, exact):
    if patch == 'no_loader_seeds':
        monkeypatch.setattr(random_state_hook, 'set_loader_seeds', lambda loader, seeds: [])
    seed = 0 if resume_seed == 0 else 12345
    runner = tiny_runner(tmp_path / 'a', exact_resume, seed=seed)
    runner.train()
    ref = final_weights(runner)
    crashed = tiny_runner(tmp_path / 'b', exact_resume, crash=True, seed=seed)
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    assert not osp.exists(tmp_path / 'b' / 'epoch_3.pth')
    resumed = tiny_runner(tmp_path / 'b', exact_resume, seed=resume_seed,
                          resume=str(tmp_path / 'b' / 'epoch_2.pth'))
    resumed.train()
    out = final_weights(resumed)
    same = all(torch.equal(ref[k], out[k]) for k in ref)
    assert same == exact, f'{name}: resumed run bit-identical: {same}'


def test_checkpoint_state_loads_weights_only_and_names_the_epoch(tmp_path):
    runner = tiny_runner(tmp_path, {})
    runner.train()
    hooks = [h for h in runner.hooks if isinstance(h, RandomStateHook)]
    assert len(hooks) == 1  # added by CheckedRunner, not by the config
    ckpt = torch.load(tmp_path / 'epoch_2.pth', map_location='cpu', weights_only=True)
    state = ckpt['random_state']
    assert state['next_epoch'] == 2 and state['world_size'] == 1 and len(state['ranks']) == 1
    assert state['loader'] == dict(sampler=0, worker_init_fn=0)


def test_exact_resume_option_is_checked(tmp_path):
    with pytest.raises(TypeError, match='exact_resume must be a dict'):
        tiny_runner(tmp_path / 'a', 'yes')
    with pytest.raises(TypeError, match='RandomStateHook.restart_workers'):
        tiny_runner(tmp_path / 'b', dict(restart_workers='no'))


def test_resume_that_cannot_be_exact_says_so(tmp_path):
    # a checkpoint saved without the hook
    tiny_runner(tmp_path / 'a', None).train()
    runner = tiny_runner(tmp_path / 'a', {}, resume=str(tmp_path / 'a' / 'epoch_2.pth'))
    msgs = logged(runner)
    runner.train()
    assert any('has no random state' in m for m in msgs), msgs
    # a checkpoint written in the middle of an epoch (4 iterations per epoch)
    every_3 = dict(checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False))
    tiny_runner(tmp_path / 'b', {}, default_hooks=every_3).train()
    runner = tiny_runner(tmp_path / 'b', {}, resume=str(tmp_path / 'b' / 'iter_3.pth'),
                         default_hooks=every_3)
    msgs = logged(runner)
    runner.train()
    assert any('in the middle of an epoch' in m for m in msgs), msgs
    # an iteration-based loop
    runner = tiny_runner(tmp_path / 'c', {}, train_cfg=dict(by_epoch=False, max_iters=2))
    msgs = logged(runner)
    runner.train()
    assert any('EpochBasedTrainLoop only' in m for m in msgs), msgs


# ---------------------------------------------------------------------- kill and resume
def debLoRA_options(root, max_epochs=4):
    """The toy debLoRA config, tiny: 2 images (2 iterations per epoch), stage 1 = epochs
    1-2, stage 2 = epochs 3-4; a persistent data loader worker and a validation (1 image)
    after every epoch, which draws random numbers between a checkpoint and the next
    epoch."""
    return toy_options(root, [
        f'train_cfg.max_epochs={max_epochs}', 'train_cfg.val_interval=1',
        'train_dataloader.batch_size=1', 'train_dataloader.dataset.indices=2',
        'train_dataloader.num_workers=1', 'train_dataloader.persistent_workers=True',
        'val_dataloader.dataset.indices=1', 'default_hooks.checkpoint.max_keep_ckpts=-1',
        'model.test_cfg.rpn.nms_pre=200', 'model.test_cfg.rpn.max_per_img=100',
        'model.test_cfg.rcnn.max_per_img=100',
        'custom_hooks.0.switch_epoch=2', 'custom_hooks.0.num_clusters=4',
        'custom_hooks.0.kmeans.n_init=1', 'custom_hooks.0.plot=None',
        'randomness.seed=0'])


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def compare(a: dict, b: dict, prefix=''):
    """(number of tensors compared, names of those that differ), recursively."""
    n, bad = 0, []
    assert set(a) == set(b), (prefix, set(a) ^ set(b))
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, dict):
            m, d = compare(x, y, f'{prefix}{k}.')
            n, bad = n + m, bad + d
        elif torch.is_tensor(x):
            n += 1
            if not torch.equal(x, y):
                bad.append(prefix + str(k))
    return n, bad


def assert_same_checkpoint(pa, pb, what):
    a, b = load(pa), load(pb)
    n, bad = compare(a['state_dict'], b['state_dict'])
    assert n > 100 and not bad, f'{what}: {len(bad)} of {n} tensors differ: {bad[:5]}'
    opt_a, opt_b = a['optimizer']['state'], b['optimizer']['state']
    assert len(opt_a) == len(opt_b) > 0
    assert all(torch.equal(opt_a[i]['momentum_buffer'], opt_b[i]['momentum_buffer'])
               for i in opt_a), what
    if a['deblora']['state'] is not None:
        m, bad = compare(a['deblora']['state'], b['deblora']['state'])
        assert m >= 4 and not bad, f'{what}: deblora_state differs: {bad}'
    return n


@pytest.fixture(scope='module')
def uninterrupted(toy_root, tmp_path_factory):
    work = tmp_path_factory.mktemp('uninterrupted')
    run_tool('train.py', DEBLORA_CFG, '--work-dir', str(work), *debLoRA_options(toy_root))
    return str(work)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_killed_in_both_stages_and_resumed_ends_bit_identical(uninterrupted, toy_root,
                                                              tmp_path):
    work, opts = str(tmp_path), debLoRA_options(toy_root)
    train = [sys.executable, osp.join(REPO, 'tools', 'train.py'), DEBLORA_CFG,
             '--work-dir', work]
    resume = train + ['--resume']
    # SIGKILL after the first of two iterations of an epoch: stage 1 (epoch 2), the first
    # stage-2 epoch (3: the last checkpoint is stage1_final.pth, the switch is redone) and
    # a later stage-2 epoch (4: a stage-2 checkpoint)
    for cmd, epoch, last in ((train, 2, 'epoch_1.pth'), (resume, 3, 'stage1_final.pth'),
                             (resume, 4, 'epoch_3.pth')):
        run_killed(cmd + opts, f'Epoch(train) [{epoch}][1/2]')
        assert not osp.exists(osp.join(work, f'epoch_{epoch}.pth'))  # killed mid-epoch
        assert open(osp.join(work, 'last_checkpoint')).read().strip().endswith(last)
    log = run_tool('train.py', *resume[2:], *opts).stdout
    assert 'resumed epoch: 3' in log and 'RandomStateHook:' not in log  # no warning
    # the switch ran in the resumed runs (twice: after the stage-1 kill and from
    # stage1_final.pth); its K-means and every later checkpoint equal the uninterrupted
    for name in ('epoch_2.pth', 'stage1_final.pth', 'epoch_3.pth', 'epoch_4.pth'):
        assert_same_checkpoint(osp.join(uninterrupted, name), osp.join(work, name), name)
    a = sorted(glob.glob(osp.join(uninterrupted, 'deblora', '*.csv')))
    assert a and all(open(f).read() == open(osp.join(work, 'deblora', osp.basename(f)))
                     .read() for f in a)
