"""tools/dist_train.sh / dist_test.sh: DDP on the CPU (gloo), 2 processes, through debLoRA's
stage 1, the switch and stage 2; ranks equal; a kill in stage 2 and --resume is exact."""
import glob
import os
import os.path as osp
import socket
import subprocess

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO, run_killed, toy_options

DEBLORA_CFG = osp.join(REPO, 'configs', 'deblora', 'oriented_rcnn_r18_deblora_toy.py')


def free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def dist_cmd(script, *args):
    return ['bash', osp.join(REPO, 'tools', script), *args]


def bare_env() -> dict:
    """No activated venv, no torchrun on PATH; one thread per process (2 on 2 cores)."""
    return dict(PYTHONUNBUFFERED='1', PORT=free_port(), OMP_NUM_THREADS='1',
                PATH='/usr/bin:/bin')


def run_dist(script, *args, timeout=900):
    env = dict(os.environ, **bare_env())
    proc = subprocess.run(dist_cmd(script, *args), cwd=REPO, env=env, timeout=timeout,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def ddp_cfg(tmp_path_factory):
    """The toy debLoRA config + a probe that saves each rank's model (tests.tools.dist_probe)
    after the switch and at the end."""
    hook = Config.fromfile(DEBLORA_CFG).custom_hooks[0].to_dict()
    hook.update(switch_epoch=1, num_clusters=4, kmeans=dict(n_init=1), plot=None)
    path = tmp_path_factory.mktemp('ddp_cfg') / 'ddp_deblora_toy.py'
    path.write_text(
        f'_base_ = {DEBLORA_CFG!r}\n'
        "custom_imports = dict(imports=['mmdeblora', 'tests.tools.dist_probe'], "
        'allow_failed_imports=False)\n'
        f"custom_hooks = [{hook!r}, dict(type='RankStateProbe')]\n")
    return str(path)


def options(root):
    """4 images, 1 per batch: 2 iterations per epoch and rank; stage 1 = epoch 1,
    stage 2 = epochs 2-3."""
    return toy_options(root, ['train_cfg.max_epochs=3', 'train_cfg.val_interval=100',
                              'train_dataloader.batch_size=1',
                              'train_dataloader.dataset.indices=4',
                              'test_dataloader.dataset.indices=2',
                              'default_hooks.checkpoint.max_keep_ckpts=-1',
                              'randomness.seed=0'])


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def equal_tensors(a: dict, b: dict):
    assert set(a) == set(b)
    same = [k for k in a if torch.equal(a[k], b[k])]
    return len(same), len(a)


@pytest.fixture(scope='module')
def uninterrupted(ddp_cfg, toy_root, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('ddp_a'))
    log = run_dist('dist_train.sh', ddp_cfg, '2', '--work-dir', work, *options(toy_root))
    return work, log


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_cpu_processes_through_the_switch(uninterrupted, toy_root, ddp_cfg):
    from mmrotate.registry import DATASETS
    from mmrotate.utils import register_all_modules

    from mmdeblora.datasets.class_stats import dataset_class_counts
    work, _ = uninterrupted
    log = open(glob.glob(osp.join(work, '*', '*.log'))[0]).read()
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    assert "backend': 'gloo'" in log
    probe = osp.join(work, 'probe')
    for tag in ('epoch2', 'epoch3', 'end'):  # epoch2: right after the switch
        r0, r1 = (load(osp.join(probe, f'rank{r}_{tag}.pth')) for r in (0, 1))
        assert r0['wrapped'] == 'MMDistributedDataParallel'
        same, n = equal_tensors(r0['state_dict'], r1['state_dict'])
        assert same == n > 100, f'{tag}: {n - same} of {n} tensors differ between ranks'
        assert any('lora_B.deblora' in k for k in r0['state_dict'])
        same, n = equal_tensors({k: v for k, v in r0['deblora'].items() if torch.is_tensor(v)},
                                {k: v for k, v in r1['deblora'].items() if torch.is_tensor(v)})
        assert same == n == 6, tag  # the same K-means and targets on both ranks
    # the K-means saw the instances of both ranks' shards: all 4 images
    register_all_modules()
    cfg = Config.fromfile(ddp_cfg)
    cfg.merge_from_dict(dict(train_dataloader=dict(dataset=dict(
        data_root=f'{toy_root}/', indices=4))))
    counts = dataset_class_counts(DATASETS.build(cfg.train_dataloader.dataset))
    state = load(osp.join(probe, 'rank0_epoch2.pth'))['deblora']
    assert state['natural_counts'].tolist() == counts
    assert int(state['counts'].sum()) == sum(counts)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_killed_in_stage2_and_resumed_ends_bit_identical(uninterrupted, toy_root, ddp_cfg,
                                                         tmp_path):
    ref, _ = uninterrupted
    work = str(tmp_path)
    cmd = dist_cmd('dist_train.sh', ddp_cfg, '2', '--work-dir', work)
    run_killed(cmd + options(toy_root), 'Epoch(train) [3][1/2]', env=bare_env())
    assert not osp.exists(osp.join(work, 'epoch_3.pth'))
    assert open(osp.join(work, 'last_checkpoint')).read().strip().endswith('epoch_2.pth')
    log = run_dist('dist_train.sh', ddp_cfg, '2', '--work-dir', work, '--resume',
                   *options(toy_root))
    assert 'resumed epoch: 2' in log and 'RandomStateHook:' not in log
    a, b = load(osp.join(ref, 'epoch_3.pth')), load(osp.join(work, 'epoch_3.pth'))
    same, n = equal_tensors(a['state_dict'], b['state_dict'])
    assert same == n > 100, f'{n - same} of {n} tensors differ'
    for tag in ('rank0_end.pth', 'rank1_end.pth'):
        same, n = equal_tensors(load(osp.join(ref, 'probe', tag))['state_dict'],
                                load(osp.join(work, 'probe', tag))['state_dict'])
        assert same == n, tag


@pytest.mark.slow
def test_dist_test_on_two_cpu_processes(uninterrupted, toy_root, ddp_cfg):
    work, _ = uninterrupted
    log = run_dist('dist_test.sh', ddp_cfg, osp.join(work, 'epoch_3.pth'), '2',
                   '--work-dir', osp.join(work, 'test'), *options(toy_root))
    assert 'dota/mAP' in log and 'tail mAP' in log


@pytest.mark.parametrize('script,args', [('dist_train.sh', ['cfg.py', '2']),
                                         ('dist_test.sh', ['cfg.py', 'x.pth', '2'])])
def test_dist_scripts_name_a_missing_interpreter(script, args):
    env = dict(bare_env(), PYTHON='/nonexistent/python')
    proc = subprocess.run(dist_cmd(script, *args), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and '/nonexistent/python not found' in proc.stderr
    usage = subprocess.run(dist_cmd(script), cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=60)
    assert usage.returncode == 2 and 'usage:' in usage.stderr
