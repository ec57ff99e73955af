"""tools/train.py -> checkpoint -> tools/test.py, on generated data and the real samples."""
import os.path as osp
import re
import subprocess
import sys

import pytest
from mmengine.fileio import load

from tests.conftest import REPO, TOY_CFG, run_tool, toy_options


@pytest.fixture(scope='module')
def trained(tmp_path_factory, toy_root):
    wd = tmp_path_factory.mktemp('train')
    run_tool('train.py', TOY_CFG, '--work-dir', str(wd), *toy_options(toy_root))
    ckpt = osp.join(wd, 'epoch_1.pth')
    assert osp.isfile(ckpt)
    return str(wd), ckpt


def _reported(stdout: str, key: str) -> float:
    return float(re.findall(rf'dota/{key}: ([0-9.]+)', stdout)[-1])


def test_checkpoint_needs_the_allow_list_under_weights_only(trained):
    """mmengine checkpoints hold a HistoryBuffer: torch refuses it unless allow-listed."""
    _, ckpt = trained
    code = ('import sys, torch\n'
            'if sys.argv[2] == "1": import mmdeblora\n'
            'torch.load(sys.argv[1], map_location="cpu", weights_only=True)\n')
    bare = subprocess.run([sys.executable, '-c', code, ckpt, '0'],
                          capture_output=True, text=True)
    assert bare.returncode != 0 and 'HistoryBuffer' in bare.stderr
    ours = subprocess.run([sys.executable, '-c', code, ckpt, '1'],
                          capture_output=True, text=True)
    assert ours.returncode == 0, ours.stderr


def test_test_tool_loads_and_evaluates_like_dotametric(trained, toy_root, tmp_path):
    from mmrotate.evaluation import DOTAMetric
    from mmdeblora.datasets import DOTA_CLASSES
    wd, ckpt = trained
    out = tmp_path / 'preds.pkl'
    proc = run_tool('test.py', TOY_CFG, ckpt, '--work-dir', str(tmp_path),
                    '--out', str(out), *toy_options(toy_root))
    log = proc.stdout + proc.stderr
    assert 'Load checkpoint from' in log
    for key in ('head mAP', 'middle mAP', 'tail mAP'):  # the group table
        assert key in log
    reported = _reported(log, 'mAP')
    # the same predictions through upstream's DOTAMetric give the same mAP
    metric = DOTAMetric()
    metric.dataset_meta = dict(classes=DOTA_CLASSES)
    metric.process({}, load(str(out)))
    assert round(metric.compute_metrics(metric.results)['mAP'], 4) == reported


def test_resume_continues_from_the_last_checkpoint(trained, toy_root, tmp_path):
    import shutil
    wd, _ = trained
    resumed = tmp_path / 'wd'
    shutil.copytree(wd, resumed)
    proc = run_tool('train.py', TOY_CFG, '--work-dir', str(resumed), '--resume',
                    *toy_options(toy_root, ['train_cfg.max_epochs=2']))
    log = proc.stdout + proc.stderr
    assert re.search(r'resumed epoch: 1', log), log[-3000:]
    assert 'Epoch(train) [1]' not in log and 'Epoch(train) [2]' in log
    assert (resumed / 'epoch_2.pth').is_file()


def test_trained_toy_model_runs_on_the_real_dota_samples(trained, shared_data, tmp_path):
    _, ckpt = trained
    root = osp.join(shared_data, 'dota_samples')
    out = tmp_path / 'real.pkl'
    run_tool('test.py', TOY_CFG, ckpt, '--work-dir', str(tmp_path), '--out', str(out),
             '--cfg-options', f'test_dataloader.dataset.data_root={root}/',
             'test_dataloader.dataset.ann_file=annfiles/',
             'test_dataloader.dataset.data_prefix.img_path=images/',
             'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
             'test_evaluator.nproc=1')
    preds = load(str(out))
    assert sorted(p['img_id'] for p in preds) == ['P0004__1__0___0', 'P2805__1024__0___0']
    import cv2
    for p in preds:
        assert p['ori_shape'] == cv2.imread(p['img_path']).shape[:2]
        assert len(p['gt_instances']['labels']) == 4
        bboxes = p['pred_instances']['bboxes']
        assert bboxes.ndim == 2 and bboxes.shape[1] == 5  # rotated boxes, image scale


def test_no_code_turns_weights_only_off():
    pattern = re.compile(r'weights_only\s*=\s*False|TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD\s*=')
    offenders = []
    for sub in ('mmdeblora', 'tools', 'benchmarks', 'configs'):
        for dirpath, _, files in __import__('os').walk(osp.join(REPO, sub)):
            for f in files:
                if f.endswith(('.py', '.sh')):
                    text = open(osp.join(dirpath, f)).read()
                    if pattern.search(text):
                        offenders.append(osp.join(dirpath, f))
    assert not offenders
