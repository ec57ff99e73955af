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
