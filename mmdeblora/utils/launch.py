"""Shared set-up for tools/train.py, tools/test.py and tools/debias.py."""
import argparse
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config, DictAction


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
    """Register mmdet, mmrotate and mmdeblora modules (default scope: the runner's)."""
    from mmdet.utils import register_all_modules as register_mmdet
    from mmrotate.utils import register_all_modules as register_mmrotate
    register_mmdet(init_default_scope=False)
    register_mmrotate(init_default_scope=False)
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


def build_runner(cfg: Config):
    """The default Runner, or the registered one named by ``runner_type``."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
