"""setup_cpu_distributed: DDP on a machine without CUDA (gloo, no device_ids); nothing
changes where CUDA is available."""
import copy
import socket

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from torch import nn

from mmdeblora.utils.launch import register_all, setup_cpu_distributed


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    register_all()


@pytest.fixture
def one_process(monkeypatch, no_cuda):
    """The environment torchrun gives a single process; the group is destroyed after."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    for key, value in dict(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK='0',
                           LOCAL_RANK='0', WORLD_SIZE='1').items():
        monkeypatch.setenv(key, value)
    yield
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def test_cpu_ddp_starts_gloo_and_wraps_without_device_ids(one_process):
    cfg = Config(dict(launcher='pytorch', find_unused_parameters=True,
                      env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=60))))
    assert setup_cpu_distributed(cfg)
    assert torch_dist.is_initialized() and torch_dist.get_backend() == 'gloo'
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    wrapper = cfg.model_wrapper_cfg
    assert wrapper.device_ids is None and wrapper.find_unused_parameters
    # Runner.wrap_model's default device_ids=[LOCAL_RANK] only fills what is missing
    args = {k: v for k, v in wrapper.items() if k != 'type'}
    args.setdefault('device_ids', [0])
    ddp = MMDistributedDataParallel(module=nn.Linear(2, 2), **args)  # a CPU module
    assert ddp.device_ids is None


def test_cpu_ddp_keeps_a_configured_wrapper(one_process):
    cfg = Config(dict(launcher='pytorch', model_wrapper_cfg=dict(
        type='MMDistributedDataParallel', broadcast_buffers=True)))
    assert setup_cpu_distributed(cfg)
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel',
                                         broadcast_buffers=True, device_ids=None)


@pytest.mark.parametrize('change,match', [
    (dict(launcher='slurm'), '--launcher slurm needs CUDA'),
    (dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel', device_ids=[0])),
     'model_wrapper_cfg.device_ids'),
    (dict(model_wrapper_cfg=dict(type='MMFullyShardedDataParallel')),
     'is not a DistributedDataParallel'),
])
def test_cpu_ddp_refuses_what_needs_cuda(no_cuda, change, match):
    cfg = Config(dict(dict(launcher='pytorch'), **change))
    with pytest.raises(ValueError, match=match):
        setup_cpu_distributed(cfg)
    assert not torch_dist.is_initialized()


def test_nothing_changes_with_cuda_or_without_a_launcher(monkeypatch):
    cfg = Config(dict(launcher='none', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    assert not setup_cpu_distributed(cfg)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    gpu = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    before = copy.deepcopy(gpu._cfg_dict.to_dict())
    assert not setup_cpu_distributed(gpu)
    assert gpu._cfg_dict.to_dict() == before and 'model_wrapper_cfg' not in gpu
    assert not torch_dist.is_initialized()


def _cfg_options(*tokens):
    import argparse

    from mmdeblora.utils.launch import add_common_args
    parser = argparse.ArgumentParser()
    add_common_args(parser)
    return parser.parse_args(['--cfg-options', *tokens]).cfg_options


def test_cfg_option_with_spaces_is_refused_naming_the_key_and_the_quoting(capsys):
    from mmengine.config import DictAction
    token = 'train_dataloader.dataset.data_root=data/my dota/'
    # upstream's DictAction, what the tools used: the path silently loses its space
    assert DictAction._parse_iterable(token.split('=', 1)[1]) == 'data/mydota/'
    with pytest.raises(SystemExit):
        _cfg_options('train_cfg.max_epochs=1', token)
    err = capsys.readouterr().err
    assert ("train_dataloader.dataset.data_root would be 'data/mydota/'. To keep them, quote "
            "the value inside the option: --cfg-options "
            "'train_dataloader.dataset.data_root=\"data/my dota/\"'") in err
    # that quoting keeps the value; a list inside it does not need it
    assert _cfg_options('train_dataloader.dataset.data_root="data/my dota/"') == {
        'train_dataloader.dataset.data_root': 'data/my dota/'}
    assert _cfg_options("a='x  y'", 'b=[1, 2]', 'c=(a, [b, c])', 'd=data/dota/') == dict(
        a='x  y', b=[1, 2], c=('a', ['b', 'c']), d='data/dota/')
    with pytest.raises(SystemExit):  # an element of a list glued the same way
        _cfg_options('e=[my dota, b]')
    assert "e would be ['mydota', 'b']" in capsys.readouterr().err


def test_resume_needs_a_checkpoint_and_resume_or_start_does_not(tmp_path):
    from mmdeblora.utils.launch import apply_resume
    typo = tmp_path / 'typo'
    cfg = Config(dict(work_dir=str(typo), resume=False, load_from='w.pth'))
    with pytest.raises(FileNotFoundError, match=f"work dir '{typo}' does not exist, so "
                       'there is nothing to resume.*--resume-or-start'):
        apply_resume(cfg, 'auto')
    typo.mkdir()
    with pytest.raises(FileNotFoundError, match=r'holds no checkpoint \(no last_checkpoint'):
        apply_resume(cfg, 'auto')
    assert cfg.resume is False  # nothing changed
    apply_resume(cfg, None, resume_or_start=True)  # mmengine's auto resume: start if none
    assert cfg.resume is True and cfg.load_from is None
    (typo / 'last_checkpoint').write_text(str(typo / 'epoch_1.pth'))
    cfg.resume = False
    apply_resume(cfg, 'auto')
    assert cfg.resume is True and cfg.load_from is None
    apply_resume(cfg, 'a.pth')
    assert cfg.load_from == 'a.pth'


@pytest.mark.parametrize('config,index', [
    ('configs/deblora/oriented_rcnn_r18_deblora_toy.py', 0),
    ('configs/classification/bias_lora_deblora.py', 1)])
def test_deblora_hook_options_by_name_whatever_the_hook_order(config, index, tmp_path):
    """issue 19: the lambda-0 control was custom_hooks.1.loss_weight in classification and
    custom_hooks.0.<option> in detection; every tool now takes DebLoRAHook.<option>."""
    import argparse
    import os.path as osp

    from mmdeblora.utils.launch import add_common_args, load_config
    from tests.conftest import REPO
    parser = argparse.ArgumentParser()
    parser.add_argument('config')
    add_common_args(parser)
    args = parser.parse_args([osp.join(REPO, config), '--work-dir', str(tmp_path),
                              '--cfg-options', 'DebLoRAHook.loss_weight=0',
                              'DebLoRAHook.kmeans.n_init=1', 'randomness.seed=3'])
    cfg = load_config(args)
    hook = cfg.custom_hooks[index]
    assert hook.type == 'DebLoRAHook' and hook.loss_weight == 0
    assert hook.kmeans == dict(n_init=1, max_iter=100, tol=1e-4, seed=0)  # merged
    assert cfg.randomness.seed == 3 and 'DebLoRAHook' not in cfg
    args.config = osp.join(REPO, 'configs', 'baselines', 'oriented_rcnn_r18_toy.py')
    with pytest.raises(ValueError, match=r"\['DebLoRAHook.kmeans.n_init', "
                       r"'DebLoRAHook.loss_weight'\] need exactly one DebLoRAHook"):
        load_config(args)


# ------------------------------------------------------------------ upstream noise (issue 20)
def test_tools_silence_the_known_upstream_warnings_only(tmp_path):
    """A tool run printed setuptools' pkg_resources warning four times before anything of
    its own; a warning nobody listed still shows."""
    import os.path as osp

    from tests.conftest import REPO, run_tool
    cfg = tmp_path / 'noisy.py'
    toy = osp.join(REPO, 'configs', 'baselines', 'oriented_rcnn_r18_toy.py')
    cfg.write_text(f'_base_ = {toy!r}\n'
                   'import warnings\n'
                   "warnings.warn('issue 20: a warning nobody knows')\n")
    proc = run_tool('train.py', str(cfg), '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                    f'train_dataloader.dataset.data_root={tmp_path}/none/', check=False)
    assert 'does not exist' in proc.stderr  # stopped by the preflight, after the config
    assert 'pkg_resources' not in proc.stderr
    assert 'UserWarning: issue 20: a warning nobody knows' in proc.stderr


def test_known_upstream_log_lines_are_dropped_and_others_kept():
    import logging

    from mmengine.logging import MMLogger, print_log

    from mmdeblora.utils.launch import quiet_known_upstream_warnings
    logger = MMLogger.get_instance('issue20_noise')  # the current instance now
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger.addHandler(Keep(level=logging.INFO))  # what mmengine's handlers print
    quiet_known_upstream_warnings()
    quiet_known_upstream_warnings()  # idempotent: one filter
    assert len(logger.filters) == 1
    registry = ('Failed to search registry with scope "{}" in the "optim_wrapper" registry '
                'tree. As a workaround, the current "optim_wrapper" registry in "mmengine" '
                'is used to build instance. This may cause unexpected failure when running '
                'the built modules. Please check whether "{}" is a correct scope, or whether '
                'the registry is initialized.')
    for msg in (registry.format('mmrotate', 'mmrotate'),
                '"FileClient" will be deprecated in future. Please use io functions in '
                'https://mmengine.readthedocs.io/en/latest/api/fileio.html#file-io',
                '"HardDiskBackend" is the alias of "LocalBackend" and the former will be '
                'deprecated in future.',
                '\nroi_head.bbox_head.fc_cls.weight - torch.Size([16, 512]): '
                '\nNormalInit: mean=0, std=0.01, bias=0 \n '):
        print_log(msg, logger='current', level=logging.WARNING)
    from mmengine.model import BaseModule

    class Tiny(BaseModule):  # init_weights outside a runner: a line per parameter
        def __init__(self):
            super().__init__(init_cfg=dict(type='Normal', layer='Linear', std=0.01))
            self.fc = nn.Linear(2, 2)

    Tiny().init_weights()
    assert seen == []
    kept = [registry.format('mmrotat', 'mmrotat'),  # a typo in default_scope: the signal
            'LoRABackbone: loaded 20/20 ResNet tensors', 'an unknown warning']
    for msg in kept:
        print_log(msg, logger='current', level=logging.WARNING)
    assert seen == kept


def test_each_runner_of_a_process_writes_its_own_vis_data(toy_root, tmp_path):
    """mmrotate names every visualizer 'visualizer' and mmengine hands a later runner the
    first instance of a name (with the first run's save_dir): without own_visualizer the
    second runner's scalars land in the first run's vis_data."""
    import os.path as osp

    from mmengine.config import DictAction

    from mmdeblora.utils.launch import build_runner
    from tests.conftest import TOY_CFG, toy_options
    register_all()
    runners = []
    for i in range(2):
        cfg = Config.fromfile(TOY_CFG)
        cfg.merge_from_dict({k: DictAction._parse_iterable(v) for k, v in (
            o.split('=', 1) for o in toy_options(toy_root)[1:])})
        cfg.work_dir, cfg.experiment_name = str(tmp_path / f'w{i}'), f'vis_{i}'
        runners.append(build_runner(cfg))
    names = [r.visualizer.instance_name for r in runners]
    assert names[0] != names[1]
    for i, r in enumerate(runners):
        r.visualizer.add_scalars({'probe': float(i)}, step=0)
        scalars = osp.join(r.log_dir, 'vis_data', 'scalars.json')
        assert osp.isfile(scalars) and str(tmp_path / f'w{i}') in scalars
        with open(scalars) as fh:
            assert [line for line in fh if '"probe"' in line] == \
                [f'{{"probe": {float(i)}, "step": 0}}\n']
