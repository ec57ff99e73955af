"""Shared fixtures: a small generated toy DOTA, the real samples, and tool runners."""
import os
import os.path as osp
import subprocess
import sys
from typing import List

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHARED_DATA = os.environ.get('MMDEBLORA_SHARED_DATA',
                             osp.join(REPO, '..', 'shared', 'data'))
TOY_CFG = osp.join(REPO, 'configs', 'baselines', 'oriented_rcnn_r18_toy.py')

# Settings that make one training run of a toy config take seconds on 2 CPU cores.
FAST_TRAIN_OPTIONS = [
    'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
    'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
    'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
    'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
    'val_evaluator.nproc=1', 'test_evaluator.nproc=1',
    'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=1',
    # the toy LoRA configs start from work_dirs/toy_foundation/epoch_6.pth (made by
    # tools/make_toy_foundation.sh); tests train them on a random base (a later
    # model.backbone.pretrained=... in `extra` wins)
    'model.backbone.pretrained=None',
]


def tree_digest(root: str) -> str:
    """sha256 of every file under ``root`` (names and bytes, in sorted order): pins what a
    generator wrote."""
    import hashlib
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            with open(osp.join(dirpath, name), 'rb') as fh:
                h.update(name.encode() + fh.read())
    return h.hexdigest()


def vis_scalars(run_dir: str) -> List[dict]:
    """Every row a run's LocalVisBackend wrote (``<run_dir>/<timestamp>/vis_data/
    scalars.json``, all timestamps: a resumed run writes a second one), in file order."""
    import glob
    import json
    rows = []
    for path in sorted(glob.glob(osp.join(run_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    return rows


def make_small_toy(out: str, seed: int = 0) -> dict:
    from mmdeblora.datasets.toy_dota import make_toy_dota
    return make_toy_dota(out, seed=seed, img_size=256, max_count=40,
                         imbalance_ratio=20, objects_per_image=8,
                         test_fraction=0.1, test_min_per_class=1, log=None)


@pytest.fixture(autouse=True)
def _registered():
    """What every tool does first: ``register_all_modules()`` (our modules, and mmengine's
    checkpoint loads weights-only; ``import mmdeblora`` alone changes no loading). Before
    every test (idempotent, cheap): torch's allow-list is process-global and a test's
    session fixtures or imports may have reset it since the session began."""
    from mmdeblora.utils import register_all_modules
    register_all_modules()


@pytest.fixture(autouse=True)
def _default_scope(request):
    """Run each test under its module's ``DEFAULT_SCOPE`` ('mmpretrain', 'mmrotate').

    mmengine's default scope is process-global: the scope the last test (or module import)
    set would decide which registry ``MODELS.build`` and dataset pipelines search, so a
    test's result would depend on the order the suite runs in.
    """
    scope = getattr(request.module, 'DEFAULT_SCOPE', None)
    if scope is None:
        yield
        return
    from mmengine.registry import DefaultScope, init_default_scope
    if DefaultScope.get_current_instance() is None:
        init_default_scope(scope)
    with DefaultScope.overwrite_default_scope(scope):
        yield


@pytest.fixture(scope='session')
def bias_target(tmp_path_factory) -> str:
    """A tiny generated bias benchmark, target domain only (``<root>/target/``; 96 px
    scenes, 24 instances in the largest class, 2 val / test crops per class)."""
    from mmdeblora.datasets.bias_benchmark import make_bias_target
    root = str(tmp_path_factory.mktemp('bias_target'))
    make_bias_target(root, max_count=24, imbalance_ratio=8, val_per_class=2,
                     test_per_class=2, img_size=96, log=None)
    return root


@pytest.fixture(scope='session')
def toy_root(tmp_path_factory) -> str:
    """A small generated toy DOTA (256 px images, 40 instances in the largest class)."""
    root = str(tmp_path_factory.mktemp('toy_dota'))
    make_small_toy(root)
    return root


@pytest.fixture(scope='session')
def shared_data() -> str:
    """The folder with the real DOTA samples (MMDEBLORA_SHARED_DATA, ../shared/data)."""
    if not osp.isdir(osp.join(SHARED_DATA, 'dota_samples')):
        pytest.skip(f'real DOTA samples not found at {SHARED_DATA} '
                    '(set MMDEBLORA_SHARED_DATA)')
    return SHARED_DATA


def run_tool(script: str, *args: str, check: bool = True,
             timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``tools/<script>`` in a fresh interpreter, as a user would."""
    cmd = [sys.executable, osp.join(REPO, 'tools', script), *args]
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='2')
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} failed ({proc.returncode}):\n'
                             f'{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}')
    return proc


def _process_tree(pid: int) -> List[int]:
    """``pid`` and all its descendants, from /proc (whatever their session: torchrun
    starts its workers in new sessions)."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant, as a crash or a pre-empted job ends a run."""
    import signal
    for _ in range(5):  # again, for processes forked while killing
        tree = [p for p in _process_tree(pid) if osp.exists(f'/proc/{p}')]
        alive = False
        for p in tree:
            try:
                os.kill(p, signal.SIGKILL)
                alive = True
            except ProcessLookupError:
                pass
        if not alive:
            return


def run_killed(cmd: List[str], marker: str, timeout: int = 900, env: dict = None) -> str:
    """Run ``cmd`` and SIGKILL it with all its processes (data loader workers, torchrun's
    workers) as soon as a line of its output contains ``marker``. Returns the output up to
    the kill; fails if the marker never shows."""
    import time
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '2', **(env or {})}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines, start = [], time.time()
    try:
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                kill_tree(proc.pid)
                proc.wait()
                return ''.join(lines)
            if time.time() - start > timeout:
                break
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait()
    raise AssertionError(f'{" ".join(cmd)}: {marker!r} never printed (exit code '
                         f'{proc.returncode}):\n' + ''.join(lines)[-6000:])


def toy_options(root: str, extra: List[str] = ()) -> List[str]:
    """--cfg-options that point a toy config at ``root`` and make it fast."""
    return ['--cfg-options',
            f'train_dataloader.dataset.data_root={root}/',
            f'val_dataloader.dataset.data_root={root}/',
            f'test_dataloader.dataset.data_root={root}/',
            *FAST_TRAIN_OPTIONS, *extra]
