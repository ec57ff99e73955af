"""CheckedRunner: checkpoints that do not fit are refused (load_from, --resume, test), what
loaded is counted, and a debLoRA stage-2 checkpoint (adapters created on load) still fits."""
import itertools
import logging
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger

from mmdeblora.engine import CheckedRunner, DivergenceHook
from mmdeblora.utils import CheckpointMismatchError
from mmdeblora.utils.launch import register_all
from tests.conftest import REPO, toy_options

DEBLORA = osp.join(REPO, 'configs', 'deblora', 'oriented_rcnn_r18_deblora_toy.py')
PLAIN = osp.join(REPO, 'configs', 'baselines', 'oriented_rcnn_r18_toy.py')


_RUNNER_IDS = itertools.count()


def make_cfg(config, root, work_dir, extra=()):
    register_all()
    cfg = Config.fromfile(config)
    opts = {}
    for item in toy_options(root, ['train_cfg.max_epochs=1', 'train_cfg.val_begin=100',
                                   'train_dataloader.batch_size=2',
                                   'train_dataloader.dataset.indices=2',
                                   'test_dataloader.dataset.indices=1', *extra])[1:]:
        key, value = item.split('=', 1)
        opts[key] = DictAction._parse_iterable(value)
    cfg.merge_from_dict(opts)
    if cfg.get('custom_hooks'):  # DebLoRAHook: stage 2 from the start, tiny K-means
        cfg.custom_hooks[0].update(switch_epoch=0, num_clusters=2, extract_batch_size=2,
                                   kmeans=dict(n_init=1), plot=None)
    cfg.work_dir = str(work_dir)
    # one logger per runner: mmengine names it by config and timestamp, so two runners built
    # in the same second would share the first one's log file
    cfg.experiment_name = f'checked_{next(_RUNNER_IDS)}_{osp.basename(str(work_dir))}'
    # no validation; the test loop only dumps predictions (mmrotate's mAP spawns processes)
    cfg.test_evaluator = dict(type='DumpResults', out_file_path=osp.join(work_dir, 'p.pkl'))
    cfg.randomness = dict(seed=0)
    cfg.runner_type = 'CheckedRunner'
    return cfg


def build(cfg, load_from=None, resume=False):
    cfg.load_from, cfg.resume = load_from, resume
    return CheckedRunner.from_cfg(cfg)


class Logged:
    """The messages logged through mmengine's current logger (the runner's, once built)."""

    def __init__(self):
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())

    def attach(self):
        handler = logging.Handler()
        handler.emit = self.emit
        MMLogger.get_current_instance().addHandler(handler)
        return self


@pytest.fixture(scope='module')
def stage2(toy_root, tmp_path_factory):
    """A 1-iteration debLoRA run: stage1_final.pth (LoRA, with optimizer state) and
    epoch_1.pth (stage 2)."""
    work = tmp_path_factory.mktemp('checked_deblora')
    runner = build(make_cfg(DEBLORA, toy_root, work))
    assert any(isinstance(h, DivergenceHook) for h in runner.hooks)  # beside DebLoRAHook
    runner.train()
    return work


def test_stage2_checkpoint_fits_though_its_adapter_is_created_on_load(stage2, toy_root,
                                                                      tmp_path):
    ckpt = osp.join(stage2, 'epoch_1.pth')
    keys = torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict']
    new = [k for k in keys if '.deblora' in k]
    assert new  # the stage-2 adapter, absent from a freshly built model
    runner = build(make_cfg(DEBLORA, toy_root, tmp_path), load_from=ckpt)
    assert not [k for k in runner.model.state_dict() if '.deblora' in k]
    logged = Logged().attach()
    runner.test()
    total = len([k for k in keys if not k.endswith('num_batches_tracked')])
    assert f'{total} of {total} model tensors loaded' in '\n'.join(logged.records)
    assert runner.model.backbone.active_adapters == ['default', 'deblora']
    # resuming it fits as well (DebLoRAHook re-enters stage 2 before the tensors load)
    runner = build(make_cfg(DEBLORA, toy_root, tmp_path / 'r'), load_from=ckpt, resume=True)
    runner.train()  # epoch 1 = max_epochs: restores, trains nothing
    assert runner.epoch == 1


def test_load_from_with_another_class_head_is_refused(toy_root, tmp_path):
    state = build(make_cfg(PLAIN, toy_root, tmp_path / 'a')).model.state_dict()
    for key in ('roi_head.bbox_head.fc_cls.weight', 'roi_head.bbox_head.fc_cls.bias'):
        state[key] = state[key][:11]  # a detector of 10 classes + background
    path = str(tmp_path / 'ten_classes.pth')
    torch.save({'meta': {}, 'state_dict': state}, path)
    runner = build(make_cfg(PLAIN, toy_root, tmp_path / 'b'), load_from=path)
    with pytest.raises(CheckpointMismatchError) as err:
        runner.train()  # before: trained on with a random class head, without a word
    msg = str(err.value)
    total = len([k for k in state if not k.endswith('num_batches_tracked')])
    assert f'{path} does not fit the model: {total - 2} of {total} model tensors loaded' in msg
    assert re.search(r'fc_cls.weight: checkpoint \(11, \d+\) vs model \(16, \d+\)', msg)
    assert '--allow-mismatch' in msg
    assert not osp.exists(tmp_path / 'b' / 'epoch_1.pth')
    # asked for explicitly: a warning with the count, and the run goes on
    runner = build(make_cfg(PLAIN, toy_root, tmp_path / 'c', ['checkpoint_mismatch=warn']),
                   load_from=path)
    logged = Logged().attach()
    runner.test()
    assert any(f'{total - 2} of {total} model tensors loaded' in m and
               "checkpoint_mismatch='warn'" in m for m in logged.records)


def test_nothing_fits_is_refused_even_when_warning_was_asked(toy_root, tmp_path):
    """issue 10: `load_from` of another model trained from scratch without a word."""
    path = str(tmp_path / 'other.pth')
    torch.save({'state_dict': {'encoder.layer1.weight': torch.zeros(3)}}, path)
    runner = build(make_cfg(PLAIN, toy_root, tmp_path, ['checkpoint_mismatch=warn']),
                   load_from=path)
    with pytest.raises(CheckpointMismatchError, match=r'0 of \d+ model tensors loaded.*'
                       'nothing would load'):
        runner.train()


def test_resume_from_another_model_says_so(stage2, toy_root, tmp_path):
    lora = osp.join(stage2, 'stage1_final.pth')
    runner = build(make_cfg(PLAIN, toy_root, tmp_path / 'a'), load_from=lora, resume=True)
    with pytest.raises(CheckpointMismatchError, match=f'cannot resume from {lora}: it was '
                       'saved by another model'):
        runner.train()
    # the same model, the optimizer grouped differently: torch's bare "loaded state dict
    # has a different number of parameter groups" before
    runner = build(make_cfg(DEBLORA, toy_root, tmp_path / 'b',
                            ['optim_wrapper.paramwise_cfg.norm_decay_mult=0']),
                   load_from=lora, resume=True)
    with pytest.raises(CheckpointMismatchError, match='its optimizer state does not fit'):
        runner.train()


def test_a_bad_mode_is_refused(toy_root, tmp_path):
    with pytest.raises(ValueError, match='checkpoint_mismatch must be one of'):
        build(make_cfg(PLAIN, toy_root, tmp_path, ['checkpoint_mismatch=ignore']))


def test_more_data_classes_than_the_class_head_is_refused_at_build(tmp_path):
    """20 class names against the 15-class bbox head: before, classes 15-19 trained as
    background and the run ended with exit code 0. No data is read: the root is empty."""
    from mmdeblora.utils.class_count_check import ClassCountError
    cfg = make_cfg(PLAIN, str(tmp_path / 'no_data'), tmp_path)
    cfg.train_dataloader.dataset.metainfo = dict(classes=[f'c{i}' for i in range(20)])
    with pytest.raises(ClassCountError, match=re.escape(
            'train_dataloader.dataset.metainfo.classes has 20 class names, more than the '
            'model has: model.roi_head.bbox_head.num_classes=15')):
        build(cfg)


def test_the_guards_are_one_table_logged_at_start_each_switched_by_its_key(tmp_path):
    """issue 19: what CheckedRunner adds without the config saying so is DEFAULT_GUARDS,
    listed in the log with each guard's value and key; every guard switches off by its key.
    No data is read: the root is empty."""
    from mmengine.hooks import CheckpointHook

    from mmdeblora.engine import AtomicCheckpointHook, RandomStateHook
    from mmdeblora.engine.checked_runner import DEFAULT_GUARDS

    def logged(runner):
        with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
            return f.read()

    root = str(tmp_path / 'no_data')
    runner = build(make_cfg(PLAIN, root, tmp_path / 'on'))
    log = logged(runner)
    assert 'CheckedRunner guards (switch each with its top-level config key' in log
    for key, guard in DEFAULT_GUARDS.items():
        assert f'on  {key}={guard.default!r}: {guard.by}' in log, key
    assert [type(h) for h in runner.hooks if isinstance(h, CheckpointHook)] == \
        [AtomicCheckpointHook]
    assert any(isinstance(h, RandomStateHook) for h in runner.hooks)
    off = ['divergence_guard=None', 'exact_resume=False', 'class_count_check=False',
           'component_checks=False', 'atomic_writes=False', 'checkpoint_mismatch=warn']
    cfg = make_cfg(PLAIN, root, tmp_path / 'off', off)
    cfg.train_dataloader.dataset.metainfo = dict(classes=[f'c{i}' for i in range(20)])
    runner = build(cfg)  # 20 classes, 15-class head: not checked when switched off
    log = logged(runner)
    for item in off[:-1]:
        assert f'off {item}:' in log, item
    assert "on  checkpoint_mismatch='warn'" in log
    assert [type(h) for h in runner.hooks if isinstance(h, CheckpointHook)] == \
        [CheckpointHook]
    assert not [h for h in runner.hooks if isinstance(h, (RandomStateHook, DivergenceHook))]
    with pytest.raises(TypeError, match='class_count_check must be True or False'):
        build(make_cfg(PLAIN, root, tmp_path / 'bad', ['class_count_check=yes']))
