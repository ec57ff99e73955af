"""Shared set-up for tools/train.py, tools/test.py and tools/debias.py.

``build_runner`` also makes ``--launcher pytorch`` work on a machine without a GPU (DDP on
the CPU, gloo backend): mmengine's launcher always calls ``torch.cuda.set_device`` and its
``wrap_model`` always passes ``device_ids=[LOCAL_RANK]``, which DDP refuses for a CPU
module. On a machine with CUDA nothing is changed.
"""
import argparse
import copy
import datetime
import logging
import os
import os.path as osp
import re
import warnings
from typing import Dict, Optional

import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.logging import print_log

# Upstream messages every tool run printed, none of them about the user's run (issue 20):
# (message regex, category) of Python warnings ...
KNOWN_UPSTREAM_WARNINGS = (
    # setuptools >= 81 on mmengine's and namespace packages' `import pkg_resources`
    (r'pkg_resources is deprecated as an API', UserWarning),
    # mmdet's Resize / RandomFlip clip every image's boxes; mmrotate's RotatedBoxes cannot
    (r'The `clip` function does nothing in `RotatedBoxes`\.', UserWarning),
)
# ... and mmengine log warnings / lines (printed with print_log, not `warnings`)
KNOWN_UPSTREAM_LOGS = tuple(re.compile(p) for p in (
    # a registry that mmrotate / mmdet / mmpretrain do not extend (e.g. optim_wrapper): mmengine
    # falls back to its own, the right one. A scope that is not installed still warns.
    r'Failed to search registry with scope "(mmrotate|mmdet|mmpretrain|mmdeblora)" in the '
    r'"\w+" registry tree\. As a workaround, the current "\w+" registry in "mmengine" is used',
    # mmcv's image loading (LoadImageFromFile) still uses mmengine's FileClient
    r'"FileClient" will be deprecated in future\. Please use io functions',
    r'"HardDiskBackend" is the alias of "LocalBackend" and the former will be deprecated',
    # init_weights outside a runner: one INFO line per parameter (a runner writes them to
    # its log file instead); the tools load a checkpoint over them anyway
    r'\n\S+ - torch\.Size\(\[[\d, ]*\]\): \n',
))


class KnownUpstreamLogs(logging.Filter):
    """Drops the records of :data:`KNOWN_UPSTREAM_LOGS`; everything else passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not any(p.match(msg) for p in KNOWN_UPSTREAM_LOGS)


def quiet_known_upstream_warnings() -> None:
    """Silence :data:`KNOWN_UPSTREAM_WARNINGS` and :data:`KNOWN_UPSTREAM_LOGS`, by exact
    message, for this process (tools only: the library stays as upstream made it).

    Runs when a tool reads its config (:func:`load_config`) and again when it has built its
    runner (:func:`build_runner`): the log filter goes to every mmengine logger existing
    then, the runner's included. Idempotent.
    """
    for message, category in KNOWN_UPSTREAM_WARNINGS:
        warnings.filterwarnings('ignore', message=message, category=category)
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance()  # the default 'mmengine' logger, if none yet
    for logger in list(MMLogger._instance_dict.values()):
        if not any(isinstance(f, KnownUpstreamLogs) for f in logger.filters):
            logger.addFilter(KnownUpstreamLogs())


# whitespace between two characters of a value (not beside a comma or bracket): mmengine's
# DictAction deletes it, gluing the words together ('data/my dota/' -> 'data/mydota/')
_GLUED = re.compile(r'[^\s,\[\]()]\s+[^\s,\[\]()]')


class CfgOptionsAction(DictAction):
    """mmengine's ``DictAction`` (``--cfg-options KEY=VALUE ...``) without its silent
    change of values with spaces.

    Upstream deletes every space of a value (``_parse_iterable``), whatever the shell
    quoting, so ``data_root='data/my dota/'`` became ``data/mydota/``. Here a value quoted
    *inside* the option, ``'KEY="data/my dota/"'``, is kept as that string, and any other
    value with a space between two of its characters is refused, naming the key and that
    quoting. Values without such spaces (``KEY=[1, 2]`` included) parse as upstream.
    """

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        options = copy.copy(getattr(namespace, self.dest, None) or {})
        for kv in values or ():
            if '=' not in kv:
                parser.error(f'{option_string} {kv!r}: expected KEY=VALUE')
            key, val = kv.split('=', maxsplit=1)
            if len(val) > 1 and val[0] == val[-1] and val[0] in '\'"' \
                    and re.search(r'\s', val[1:-1]):
                options[key] = val[1:-1]  # quoted inside the option: kept as it is
                continue
            if _GLUED.search(val):
                quoted = '{}="{}"'.format(key, val.strip('\'"'))
                parser.error(
                    f'{option_string} {kv!r}: mmengine deletes the spaces in option '
                    f'values, so {key} would be {self._parse_iterable(val)!r}. To keep '
                    f"them, quote the value inside the option: {option_string} '{quoted}'")
            options[key] = self._parse_iterable(val)
        setattr(namespace, self.dest, options)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The OpenMMLab command-line options every tool shares."""
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options', nargs='+', action=CfgOptionsAction,
        help='override config settings, key=value (e.g. '
        'train_dataloader.dataset.data_root=data/dota/); a value with spaces needs '
        'quotes inside the option: \'key="data/my dota/"\'; DebLoRAHook.<option>=value '
        'sets an option of the config\'s DebLoRAHook wherever custom_hooks lists it')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank, older versions --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def register_all() -> None:
    """``register_all_modules()`` with its defaults (:mod:`mmdeblora.utils.setup_env`), under
    the name the tests use; tools call ``register_all_modules`` itself."""
    from .setup_env import register_all_modules
    register_all_modules()


HOOK_PREFIX = 'DebLoRAHook.'


def hook_keys(cfg, opts: Dict[str, object]) -> Dict[str, object]:
    """Options addressed to the config's DebLoRAHook by name (``DebLoRAHook.loss_weight``)
    become ``custom_hooks.<its index>.loss_weight``, whatever the order of the hook list
    (the classification configs list ``TrainableParamsHook`` first, detection ones not)."""
    named = sorted(k for k in opts if k.startswith(HOOK_PREFIX))
    if not named:
        return opts
    index = [i for i, h in enumerate(cfg.get('custom_hooks') or [])
             if isinstance(h, dict) and h.get('type') == 'DebLoRAHook']
    if len(index) != 1:
        raise ValueError(f'options {named} need exactly one DebLoRAHook in the config\'s '
                         f'custom_hooks, it has {len(index)}; address the hook by its '
                         'index instead (custom_hooks.<i>.<option>)')
    return {(f'custom_hooks.{index[0]}.{k[len(HOOK_PREFIX):]}'
             if k.startswith(HOOK_PREFIX) else k): v for k, v in opts.items()}


def load_config(args: argparse.Namespace, work_dir: Optional[str] = None) -> Config:
    """Read the config, apply --cfg-options, --launcher and the work dir rule.

    Tools that take a CHECKPOINT argument get it checked here too, before any model is built.
    """
    quiet_known_upstream_warnings()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file {args.config!r} does not exist')
    checkpoint = getattr(args, 'checkpoint', None)
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint!r} does not exist')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:  # DebLoRAHook.<option>: the hook, wherever listed
        cfg.merge_from_dict(hook_keys(cfg, args.cfg_options))
    # work_dir: CLI > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def apply_resume(cfg: Config, resume: Optional[str], resume_or_start: bool = False) -> None:
    """``--resume [CKPT]`` / ``--resume-or-start`` of tools/train.py into the config.

    mmengine's auto resume (``resume=True`` without ``load_from``) starts a new run when the
    work dir holds no checkpoint, so ``--resume`` with a mistyped work dir trained from
    scratch to exit code 0. Here ``--resume`` without a path needs a checkpoint (the work
    dir's ``last_checkpoint``, which mmengine reads) and fails before anything is built;
    ``--resume-or-start`` keeps mmengine's behaviour for scripts that rerun one command.
    """
    if resume_or_start:
        if resume is not None:
            raise ValueError('--resume and --resume-or-start exclude each other')
        cfg.resume, cfg.load_from = True, None
    elif resume == 'auto':
        marker = osp.join(cfg.work_dir, 'last_checkpoint')
        if not osp.isfile(marker):
            state = ('holds no checkpoint (no last_checkpoint file)' if osp.isdir(cfg.work_dir)
                     else 'does not exist')
            raise FileNotFoundError(
                f'--resume: the work dir {cfg.work_dir!r} {state}, so there is nothing to '
                'resume. Check --work-dir (or the config name, which names the default '
                'work dir), give the checkpoint (--resume CKPT), or pass --resume-or-start '
                'to start a new run when there is no checkpoint')
        cfg.resume, cfg.load_from = True, None
    elif resume is not None:
        cfg.resume, cfg.load_from = True, resume


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


def close_distributed() -> None:
    """Tear the process group down before the interpreter exits (all ranks, after the work).

    A gloo group left to the exit handlers can abort a worker after the run finished
    ("terminate called without an active exception", seen once in CI on a 2-process
    ``dist_test.sh``), which turns a finished run into a failed one."""
    import torch.distributed as tdist
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


_VIS_NAMES: set = set()  # visualizer names the runners of this process were given


def own_visualizer(cfg: Config) -> None:
    """Give the config's visualizer a name no earlier runner of this process used.

    mmdet's and mmrotate's runtime configs name every visualizer ``'visualizer'``, and
    mmengine hands a later runner the first instance of a name, with that runner's
    ``save_dir``: the second run of a process (the tables run seeds and a test after each
    training in one process) wrote its scalars into the first run's ``vis_data``. The first
    runner keeps the config's name, so a one-run process is as upstream makes it."""
    vis = cfg.get('visualizer')
    if not isinstance(vis, dict):
        return
    name = base = vis.get('name', 'visualizer')
    i = 0
    while name in _VIS_NAMES:
        i += 1
        name = f'{base}_{i}'
    _VIS_NAMES.add(name)
    vis['name'] = name


def build_runner(cfg: Config):
    """The default Runner, or the registered one named by ``runner_type``; DDP on the CPU
    when launched distributed without CUDA (``setup_cpu_distributed``); a visualizer of
    its own (``own_visualizer``)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    setup_cpu_distributed(cfg)
    own_visualizer(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    quiet_known_upstream_warnings()  # the runner's own logger too
    return runner
