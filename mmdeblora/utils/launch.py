"""Shared set-up for tools/train.py, tools/test.py and tools/debias.py.

``build_runner`` also makes ``--launcher pytorch`` work on a machine without a GPU (DDP on
the CPU, gloo backend): mmengine's launcher always calls ``torch.cuda.set_device`` and its
``wrap_model`` always passes ``device_ids=[LOCAL_RANK]``, which DDP refuses for a CPU
module. On a machine with CUDA nothing is changed.
"""
import argparse
import datetime
import os
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.logging import print_log


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The OpenMMLab command-line options every tool shares."""
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value (e.g. '
        'train_dataloader.dataset.data_root=data/dota/)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank, older versions --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def register_all() -> None:
    """Register mmdet, mmrotate, mmpretrain and mmdeblora modules (default scope: the
    runner's, i.e. the config's ``default_scope``: mmrotate for detection, mmpretrain for
    classification)."""
    from mmdet.utils import register_all_modules as register_mmdet
    from mmpretrain.utils import register_all_modules as register_mmpretrain
    from mmrotate.utils import register_all_modules as register_mmrotate
    register_mmdet(init_default_scope=False)
    register_mmrotate(init_default_scope=False)
    register_mmpretrain(init_default_scope=False)
    import mmdeblora  # noqa: F401  registers our modules and the checkpoint allow-list


def load_config(args: argparse.Namespace, work_dir: Optional[str] = None) -> Config:
    """Read the config, apply --cfg-options, --launcher and the work dir rule.

    Tools that take a CHECKPOINT argument get it checked here too, before any model is built.
    """
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file {args.config!r} does not exist')
    checkpoint = getattr(args, 'checkpoint', None)
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint!r} does not exist')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    # work_dir: CLI > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def setup_cpu_distributed(cfg: Config) -> bool:
    """DDP without CUDA: start the gloo process group ourselves and build DDP without
    ``device_ids``. Returns whether it did (a distributed launcher and no CUDA device).

    The process group is started here, before the runner, so that mmengine's
    ``Runner.setup_env`` finds it started and skips ``init_dist`` (which would call
    ``torch.cuda.set_device``). ``model_wrapper_cfg`` gets ``device_ids=None``, which
    mmengine's ``wrap_model`` keeps (it only fills defaults), also when the debLoRA switch
    wraps the model again with the same config.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher != 'pytorch':
        raise ValueError(f'--launcher {launcher} needs CUDA devices; without a GPU only '
                         '--launcher pytorch (tools/dist_train.sh, tools/dist_test.sh) runs '
                         'DDP on the CPU')
    _cpu_model_wrapper(cfg)
    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    dist_cfg = env_cfg.setdefault('dist_cfg', ConfigDict())
    backend = dist_cfg.get('backend', 'nccl')
    if backend != 'gloo':
        print_log(f'no CUDA device: DDP on the CPU with the gloo backend (env_cfg.dist_cfg.'
                  f'backend={backend!r} needs GPUs)', logger='current')
        dist_cfg.backend = 'gloo'
    import torch.distributed as torch_dist
    if not torch_dist.is_initialized():
        kwargs = {k: v for k, v in dist_cfg.items() if k != 'backend'}
        if kwargs.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
        torch_dist.init_process_group(backend='gloo', **kwargs)
    return True


def _cpu_model_wrapper(cfg: Config) -> None:
    """``model_wrapper_cfg`` for DDP on the CPU: no ``device_ids``."""
    from mmengine.registry import MODEL_WRAPPERS
    from torch.nn.parallel import DistributedDataParallel
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:  # what Runner.wrap_model builds by default, minus device_ids
        cfg.model_wrapper_cfg = ConfigDict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        return
    name = wrapper.get('type', 'MMDistributedDataParallel')
    wrapper_type = MODEL_WRAPPERS.get(name) if isinstance(name, str) else name
    if not (isinstance(wrapper_type, type) and
            issubclass(wrapper_type, DistributedDataParallel)):
        raise ValueError(f'model_wrapper_cfg.type={name!r} is not a DistributedDataParallel '
                         'and needs CUDA devices; on the CPU use MMDistributedDataParallel')
    if wrapper.get('device_ids') is not None:
        raise ValueError(f'model_wrapper_cfg.device_ids={wrapper.device_ids} needs CUDA '
                         'devices; there are none here')
    wrapper.device_ids = None


def build_runner(cfg: Config):
    """The default Runner, or the registered one named by ``runner_type``; DDP on the CPU
    when launched distributed without CUDA (``setup_cpu_distributed``)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    setup_cpu_distributed(cfg)
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
