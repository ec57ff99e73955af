"""TrainingPhasesHook on a tiny runner: the class-aware sampler it switches to balances the
batches, each phase trains (and freezes) what it says, eval-mode modules stay in eval mode,
the model hears its options, each phase has its own lr, a resume re-enters the phase, and
misconfigurations fail before the first iteration."""
import collections
import os.path as osp

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from torch import nn
from torch.utils.data import Dataset

from mmdeblora.engine import CheckedRunner
from mmdeblora.engine.hooks import TrainingPhasesHook
from mmdeblora.utils.launch import register_all

COUNTS = [48, 12, 4]  # long-tailed: 75 % / 19 % / 6 %


class LongTailed(Dataset):
    """Items of class c carry c in their input, so a batch tells which classes it drew."""
    metainfo = dict(classes=('a', 'b', 'c'))

    def __init__(self):
        self.labels = [c for c, n in enumerate(COUNTS) for _ in range(n)]

    def __len__(self):
        return len(self.labels)

    def get_cat_ids(self, i):
        return [self.labels[i]]

    def __getitem__(self, i):
        y = self.labels[i]
        return dict(inputs=torch.tensor([float(y), 1.0, i / 64, 0.5]), labels=torch.tensor(y))


class Head(nn.Module):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.scale = nn.Parameter(torch.ones(()))  # stands for DRO-LT's learned eps
        self.options = []

    def set_train_phase(self, **options):
        self.options.append(options)


class Toy(BaseModel):
    """backbone (a BatchNorm'd linear layer, a frozen 'foundation' weight) + head."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 4))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.head = Head()
        self.backbone_modes = []

    def forward(self, inputs, labels=None, mode='tensor'):
        if mode == 'loss':
            self.backbone_modes.append(self.backbone.training)
        x = self.backbone(inputs + self.frozen(inputs))
        logits = self.head.fc(x) * self.head.scale
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(logits, labels))
        return logits


class Probe(Hook):
    """Per epoch: the classes drawn, the trainable names, the optimizer's parameters and
    lr, and weights before and after."""
    priority = 'LOW'

    def __init__(self):
        self.epochs = collections.defaultdict(dict)

    def before_train_epoch(self, runner):
        model = runner.model
        names = {id(p): n for n, p in model.named_parameters()}
        self.epochs[runner.epoch].update(
            trainable=sorted(n for n, p in model.named_parameters() if p.requires_grad),
            optimized=sorted(names[id(p)] for g in runner.optim_wrapper.optimizer.param_groups
                             for p in g['params']),
            lr=runner.optim_wrapper.get_lr()['lr'][0], drawn=collections.Counter(),
            start={n: p.detach().clone() for n, p in model.state_dict().items()},
            sampler=type(runner.train_dataloader.sampler).__name__)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.epochs[runner.epoch]['drawn'].update(data_batch['labels'].tolist())

    def after_train_epoch(self, runner):
        self.epochs[runner.epoch]['end'] = {n: p.detach().clone()
                                            for n, p in runner.model.state_dict().items()}


PHASES = [
    dict(name='features', begin=1,
         sampler=dict(type='mmdet.ClassAwareSampler', num_sample_class=2),
         trainable=['backbone', 'head.scale'], model_options=dict(dro=True),
         optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.02))),
    dict(name='classifier', begin=2, trainable=['head.fc'], eval_modules=['backbone'],
         model_options=dict(dro=False),
         optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.03))),
]


def tiny_runner(work, phases=PHASES, max_epochs=3, resume=None, name='run'):
    register_all()  # as the tools do first: weights-only checkpoints (module fixtures too)
    torch.manual_seed(0)  # the same initial weights in every run
    loader = dict(dataset=LongTailed(), batch_size=8, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=True),
                  collate_fn=dict(type='default_collate'))
    probe = Probe()
    optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01))
    runner = CheckedRunner(
        model=Toy(), work_dir=str(work), train_dataloader=loader,
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs), optim_wrapper=optim_wrapper,
        cfg=dict(optim_wrapper=optim_wrapper),  # what the phases' optimizers start from
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=[dict(type='TrainingPhasesHook', phases=phases), probe],
        randomness=dict(seed=0), resume=resume is not None, load_from=resume,
        experiment_name=f'{name}_{osp.basename(str(work))}')
    return runner, probe


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp('phases')
    runner, probe = tiny_runner(work)
    runner.train()
    return runner, probe, work


def changed(epoch, buffers=False):
    return {n for n in epoch['start'] if not torch.equal(epoch['start'][n], epoch['end'][n])
            and (buffers or 'running' not in n and 'num_batches' not in n)}


def test_sampler_switch_balances_the_classes(trained):
    _, probe, _ = trained
    natural, balanced = probe.epochs[0]['drawn'], probe.epochs[1]['drawn']
    assert probe.epochs[0]['sampler'] == 'DefaultSampler'
    assert probe.epochs[1]['sampler'] == probe.epochs[2]['sampler'] == 'ClassAwareSampler'
    assert [natural[c] for c in range(3)] == COUNTS  # one pass over the data set
    # the same epoch length, now a third of it per class (groups of 2 per class draw)
    assert sum(balanced.values()) == sum(COUNTS)
    assert all(abs(balanced[c] - sum(COUNTS) / 3) <= 2 for c in range(3)), balanced


def test_each_phase_trains_what_it_says(trained):
    runner, probe, _ = trained
    e0, e1, e2 = (probe.epochs[i] for i in range(3))
    initial = ['backbone.0.bias', 'backbone.0.weight', 'backbone.1.bias', 'backbone.1.weight',
               'head.fc.bias', 'head.fc.weight', 'head.scale']
    assert e0['trainable'] == initial  # the config's optimizer holds every parameter
    assert e1['trainable'] == e1['optimized'] == [n for n in initial if 'fc' not in n]
    assert e2['trainable'] == e2['optimized'] == ['head.fc.bias', 'head.fc.weight']
    assert changed(e0) == set(initial)
    assert changed(e1) == set(initial) - {'head.fc.bias', 'head.fc.weight'}
    assert changed(e2) == {'head.fc.bias', 'head.fc.weight'}  # the frozen weight never
    assert (e0['lr'], e1['lr'], e2['lr']) == (0.01, 0.02, 0.03)
    assert runner.model.head.options == [dict(dro=True), dict(dro=False)]


def test_eval_modules_stay_in_eval_mode_through_the_phase(trained):
    runner, probe, _ = trained
    modes = runner.model.backbone_modes
    iters = len(modes) // 3
    assert all(modes[:2 * iters]) and not any(modes[2 * iters:])
    # frozen BN statistics: they follow the data until the classifier phase, then stay
    stats = {'backbone.0.running_mean', 'backbone.0.running_var',
             'backbone.0.num_batches_tracked'}
    assert stats <= changed(probe.epochs[1], buffers=True)
    assert not stats & changed(probe.epochs[2], buffers=True)


def test_resume_re_enters_the_phase_and_ends_where_the_run_ended(trained, tmp_path):
    runner, _, work = trained
    resumed, probe = tiny_runner(tmp_path, resume=osp.join(str(work), 'epoch_2.pth'),
                                 name='resumed')
    resumed.train()  # the optimizer state of phase 1 loads into phase 1's groups
    hook = next(h for h in resumed.hooks if isinstance(h, TrainingPhasesHook))
    assert hook.current == 1
    assert probe.epochs[2]['optimized'] == ['head.fc.bias', 'head.fc.weight']
    for (n, a), b in zip(runner.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), n


@pytest.mark.parametrize('phases,match', [
    ([dict(begin=1, trainable=['head.fx'])], "'head.fx' matches no parameter"),
    ([dict(begin=1, trainable=['frozen'])], "'frozen' matches no parameter"),
    ([dict(begin=1, eval_modules=['neck'])], "'neck', not a module"),
    ([dict(begin=1, sampler=dict(type='NoSuchSampler'))], 'sampler cannot be built'),
    ([dict(begin=1, optim_wrapper=dict(optimizer=dict(type='SGDX', lr=1)))],
     'optim_wrapper cannot be built'),
])
def test_misconfig_fails_before_the_first_iteration(tmp_path, phases, match):
    runner, probe = tiny_runner(tmp_path, phases=phases)
    with pytest.raises(ValueError, match=match):
        runner.train()
    assert runner.iter == 0


@pytest.mark.parametrize('phases,exc,match', [
    ([], TypeError, 'non-empty list'),
    ([dict(begin=2), dict(begin=2)], ValueError, 'begin must be an integer epoch > 2'),
    ([dict(begin=0)], ValueError, 'after epoch 0'),
    ([dict(begin=1, freeze=['x'])], KeyError, "unknown keys \\['freeze'\\]"),
    ([dict(begin=1, trainable='head')], TypeError, 'list of names'),
    ([dict(begin=1, param_scheduler=dict(type='ConstantLR'))], ValueError, 'own optim_wrapper'),
])
def test_phase_list_is_checked_when_built(phases, exc, match):
    with pytest.raises(exc, match=match):
        TrainingPhasesHook(phases)
