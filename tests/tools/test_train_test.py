"""tools/train.py -> checkpoint -> tools/test.py, on generated data and the real samples."""
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmengine.fileio import load

from tests.conftest import REPO, TOY_CFG, run_tool, toy_options
from tests.utils.test_checkpoint import EVIL, UNSAFE_ADVICE


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
            'if sys.argv[2] == "1": import mmdeblora; mmdeblora.register_all_modules()\n'
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


@pytest.mark.slow
def test_test_tool_refuses_a_checkpoint_that_does_not_fit(trained, toy_root, tmp_path):
    """issue 10: a checkpoint of which 0 keys match, or whose class head has another size,
    printed a normal mAP table and exited 0."""
    _, ckpt = trained
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': {'encoder.layer1.weight': torch.zeros(3)}}, other)
    proc = run_tool('test.py', TOY_CFG, str(other), '--work-dir', str(tmp_path),
                    *toy_options(toy_root), check=False)
    assert proc.returncode != 0 and 'Epoch(test)' not in proc.stdout + proc.stderr
    assert re.search(rf'CheckpointMismatchError: checkpoint {other} does not fit the model: '
                     r'0 of \d+ model tensors loaded', proc.stderr), proc.stderr[-2000:]
    # a class head of another size, evaluated on purpose: a warning with the count
    saved = torch.load(ckpt, map_location='cpu', weights_only=True)
    for key in ('roi_head.bbox_head.fc_cls.weight', 'roi_head.bbox_head.fc_cls.bias'):
        saved['state_dict'][key] = saved['state_dict'][key][:11]
    head = tmp_path / 'ten_classes.pth'
    torch.save(saved, head)
    proc = run_tool('test.py', TOY_CFG, str(head), '--work-dir', str(tmp_path),
                    '--allow-mismatch', *toy_options(toy_root))
    log = proc.stdout + proc.stderr
    assert re.search(r'does not fit the model: (\d+) of (\d+) model tensors loaded; 2 with '
                     r'another shape', log) and "checkpoint_mismatch='warn'" in log
    assert 'dota/mAP' in log


@pytest.mark.slow
def test_test_tool_never_runs_code_from_a_checkpoint(toy_root, tmp_path, monkeypatch):
    """issue 10: with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, tools/test.py ran the checkpoint's
    code (mmengine leaves weights_only unset)."""
    evil, marker = tmp_path / 'evil.pth', tmp_path / 'PWNED'
    subprocess.run([sys.executable, '-c', EVIL, str(evil), str(marker)], check=True)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    proc = run_tool('test.py', TOY_CFG, str(evil), '--work-dir', str(tmp_path),
                    *toy_options(toy_root), check=False)
    assert proc.returncode != 0 and not marker.exists()
    assert f"checkpoint '{evil}' refers to 'posix.system'" in proc.stderr, proc.stderr[-2000:]
    assert not any(advice in proc.stderr for advice in UNSAFE_ADVICE)


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


def test_resume_without_a_checkpoint_stops_and_resume_or_start_starts(toy_root, tmp_path):
    """Before, ``--resume`` with a mistyped work dir trained from scratch to exit code 0."""
    typo = tmp_path / 'typo'
    opts = toy_options(toy_root, ['train_cfg.val_begin=100', 'train_dataloader.batch_size=2',
                                  'train_dataloader.dataset.indices=2'])
    proc = run_tool('train.py', TOY_CFG, '--work-dir', str(typo), '--resume', *opts,
                    check=False)
    assert proc.returncode != 0
    assert (f"FileNotFoundError: --resume: the work dir '{typo}' does not exist, so there "
            'is nothing to resume') in proc.stderr, proc.stderr[-3000:]
    assert not typo.exists()
    # the explicit flag keeps mmengine's behaviour: start when there is no checkpoint
    run_tool('train.py', TOY_CFG, '--work-dir', str(typo), '--resume-or-start', *opts)
    assert (typo / 'epoch_1.pth').is_file()


def test_cfg_option_with_a_space_is_refused_by_the_tools(tmp_path):
    """Before, ``data_root=data/my dota/`` became ``data/mydota/`` without a word."""
    for tool, args in (('train.py', []), ('test.py', [str(tmp_path / 'none.pth')])):
        proc = run_tool(tool, TOY_CFG, *args, '--cfg-options',
                        'test_dataloader.dataset.data_root=data/my dota/', check=False)
        assert proc.returncode == 2
        assert ("test_dataloader.dataset.data_root would be 'data/mydota/'. To keep them, "
                'quote the value inside the option: --cfg-options '
                '\'test_dataloader.dataset.data_root="data/my dota/"\'') in proc.stderr


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
