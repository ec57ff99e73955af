"""DebLoRAHook on a tiny toy run: the switch, the optimizer, the loss, resume."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config, DictAction
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmdeblora.deblora import DebiasState
from mmdeblora.utils.launch import register_all
from tests.conftest import REPO, toy_options

CFG = osp.join(REPO, 'configs', 'deblora', 'oriented_rcnn_r18_deblora_toy.py')


class Probe(Hook):
    """Records, at the start of each epoch (after DebLoRAHook), what the run looks like."""
    priority = 'LOW'

    def __init__(self):
        self.epochs, self.iters = {}, []

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

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.iters.append((runner.epoch, sorted(outputs)))


def make_runner(root, work_dir, name, max_epochs, resume=None):
    register_all()
    cfg = Config.fromfile(CFG)
    opts = {}
    for item in toy_options(root, [f'train_cfg.max_epochs={max_epochs}',
                                   'train_cfg.val_interval=100',
                                   'train_dataloader.batch_size=2',
                                   'train_dataloader.dataset.indices=4',
                                   'default_hooks.checkpoint.max_keep_ckpts=-1'])[1:]:
        k, v = item.split('=', 1)
        opts[k] = DictAction._parse_iterable(v)
    cfg.merge_from_dict(opts)
    cfg.custom_hooks[0].update(switch_epoch=1, num_clusters=4, extract_batch_size=4,
                               kmeans=dict(n_init=1))
    cfg.work_dir, cfg.experiment_name = str(work_dir), name
    cfg.randomness = dict(seed=0)
    if resume:
        cfg.resume, cfg.load_from = True, resume
    runner = Runner.from_cfg(cfg)
    probe = Probe()
    runner.register_hook(probe)
    return runner, probe


def hook_of(runner):
    return next(h for h in runner.hooks if type(h).__name__ == 'DebLoRAHook')


@pytest.fixture(scope='module')
def trained(toy_root, tmp_path_factory):
    work = tmp_path_factory.mktemp('deblora_run')
    runner, probe = make_runner(toy_root, work, 'deblora_a', max_epochs=3)
    runner.train()
    return runner, probe, work


def test_switches_at_the_configured_epoch(trained):
    runner, probe, work = trained
    hook = hook_of(runner)
    assert probe.epochs[0]['stage'] == 1 and probe.epochs[0]['adapters'] == ['default']
    assert probe.epochs[1]['stage'] == 2 and hook.switched_at == 1
    assert probe.epochs[1]['adapters'] == ['default', 'deblora']
    assert runner.model.backbone.active_adapters == ['default', 'deblora']
    # the feature loss exists in stage 2 only
    assert all(('loss_deblora_feat' in keys) == (ep >= 1) for ep, keys in probe.iters)
    st = DebiasState.load(osp.join(work, 'deblora'))
    assert torch.equal(st.counts, hook.state.counts)
    assert st.counts.sum() > 0 and set(st.stats) == {'before', 'after'}
    assert osp.isfile(osp.join(work, 'deblora', 'counts.csv'))


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


def test_feature_loss_decreases(trained):
    # the run's own optimizer, lr and momentum, the config's lambda: full stage-2 steps
    # on one fixed batch pull the debLoRA features toward their targets
    runner, _, _ = trained
    model = runner.model
    hook = hook_of(runner)
    assert model._debias['loss_weight'] == 0.2
    assert hook.state.loss_scale > 0
    assert model._debias['loss_scale'] == pytest.approx(hook.state.loss_scale)
    batch = next(iter(runner.train_dataloader))
    losses = []
    for _ in range(5):
        out = model.train_step(copy.deepcopy(batch), runner.optim_wrapper)
        losses.append(float(out['loss_deblora_feat']))
    assert losses[0] > 0
    assert losses[-1] < losses[0], losses


def test_resume_in_stage2_restores_state(trained, tmp_path):
    old, probe, work = trained
    ckpt = osp.join(work, 'epoch_2.pth')
    saved = torch.load(ckpt, map_location='cpu', weights_only=True)
    runner, _ = make_runner(osp.dirname(old.cfg.train_dataloader.dataset.data_root),
                            tmp_path, 'deblora_b', max_epochs=2, resume=ckpt)
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


def test_resume_before_switch_as_if_uninterrupted(trained, tmp_path):
    old, _, work = trained
    runner, probe = make_runner(osp.dirname(old.cfg.train_dataloader.dataset.data_root),
                                tmp_path, 'deblora_c', max_epochs=2,
                                resume=osp.join(work, 'epoch_1.pth'))
    runner.train()
    hook, ref = hook_of(runner), hook_of(old).state
    assert probe.epochs[1]['stage'] == 2 and hook.switched_at == 1
    assert torch.equal(hook.state.counts, ref.counts)
    assert torch.allclose(hook.state.centers, ref.centers, atol=1e-6)
