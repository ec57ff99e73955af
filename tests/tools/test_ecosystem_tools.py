"""The tools OpenMMLab users reach for, on one tiny real run: the TensorBoard backend,
curves and iteration times from its ``scalars.json`` (tools/analysis/analyze_logs.py), and
the rotated image demo (tools/demo/image_demo.py) with its checkpoint."""
import glob
import importlib.util
import json
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import REPO, TOY_CFG, run_tool, toy_options
from tests.utils.test_checkpoint import EVIL

DEFAULT_SCOPE = 'mmrotate'


def _tool(rel: str):
    spec = importlib.util.spec_from_file_location(osp.basename(rel)[:-3],
                                                  osp.join(REPO, 'tools', rel))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _image(tmp_path) -> str:
    import cv2
    path = str(tmp_path / 'img.png')
    cv2.imwrite(path, np.full((64, 64, 3), 128, np.uint8))
    return path


@pytest.fixture(scope='module')
def run(tmp_path_factory, toy_root):
    """2 epochs x 2 iterations of the toy config, validated after each, with the
    TensorBoard backend beside mmengine's local one (a config file: --cfg-options cannot
    give a list of dicts)."""
    wd = tmp_path_factory.mktemp('tb_run')
    cfg = wd / 'toy_tensorboard.py'
    cfg.write_text(f'_base_ = [{TOY_CFG!r}]\nvisualizer = dict(vis_backends=['
                   "dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')])\n")
    run_tool('train.py', str(cfg), '--work-dir', str(wd), *toy_options(toy_root, [
        'train_cfg.max_epochs=2', 'train_dataloader.batch_size=1',
        'train_dataloader.dataset.indices=2', 'val_dataloader.dataset.indices=1']))
    log, = glob.glob(str(wd / '*' / 'vis_data' / 'scalars.json'))
    return str(wd), log


def test_tensorboard_backend_writes_an_events_file(run):
    """Before, ``TensorboardVisBackend`` raised ImportError: tensorboard was not installed."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _, log = run
    events, = glob.glob(osp.join(osp.dirname(log), 'events.out.tfevents.*'))
    acc = EventAccumulator(events)
    acc.Reload()
    tags = acc.Tags()['scalars']
    assert {'loss', 'lr', 'dota/mAP', 'dota/tail_mAP'} <= set(tags), tags
    assert [e.step for e in acc.Scalars('loss')] == [1, 2, 3, 4]


def test_cal_train_time_files_each_iteration_under_its_epoch(run, capsys):
    """mmdet's reader filed each epoch's first iteration under the previous epoch (and
    mmrotate's copy of the tool raised ValueError on the unequal epochs)."""
    _, log = run
    lines = [json.loads(line) for line in open(log)]
    times = {e: [r['time'] for r in lines if r.get('epoch') == e] for e in (1, 2)}
    assert all(len(t) == 2 for t in times.values())
    _tool('analysis/analyze_logs.py').main(['cal_train_time', log])
    out = capsys.readouterr().out
    expect = {e: np.mean(t[1:]) for e, t in times.items()}  # the first one left out
    slow = max(expect, key=expect.get)
    assert f'slowest epoch {slow}, average time is {expect[slow]:.4f} s/iter' in out, out
    assert f'average iter time: {np.mean(list(expect.values())):.4f} s/iter' in out


def test_plot_curve_draws_losses_and_group_maps(run, tmp_path, capsys):
    _, log = run
    tool = _tool('analysis/analyze_logs.py')
    for keys in (['loss', 'loss_cls'], ['mAP', 'head_mAP', 'tail_mAP']):
        out = tmp_path / f'{keys[0]}.png'
        tool.main(['plot_curve', log, '--keys', *keys, '--backend', 'Agg', '--out', str(out)])
        assert out.stat().st_size > 1000
    # upstream plots a validation key without 'mAP' in its name against iterations
    with pytest.raises(KeyError, match="'ship' is a validation value"):
        tool.main(['plot_curve', log, '--keys', 'ship', '--backend', 'Agg'])
    with pytest.raises(KeyError, match=r"has no 'mAp'; it has \['AP50', 'acc'"):
        tool.main(['plot_curve', log, '--keys', 'mAp', '--backend', 'Agg'])


def test_image_demo_draws_rotated_boxes_on_a_real_image(run, shared_data, tmp_path, capsys):
    wd, _ = run
    img = osp.join(shared_data, 'dota_demo.jpg')
    out = tmp_path / 'pred.png'
    proc = run_tool('demo/image_demo.py', img, TOY_CFG, osp.join(wd, 'epoch_2.pth'),
                    '--out-file', str(out), '--score-thr', '0')
    import cv2
    drawn = cv2.imread(str(out))
    assert drawn.shape == cv2.imread(img).shape  # drawn at the image's own size
    assert (drawn != cv2.imread(img)).any()  # with boxes on it
    assert f'wrote {out}' in proc.stdout and 'detections score >= 0.0: ' in proc.stdout
    # an existing output is kept unless --force
    with pytest.raises(SystemExit) as exit_:
        _tool('demo/image_demo.py').main([img, TOY_CFG, osp.join(wd, 'epoch_2.pth'),
                                          '--out-file', str(out)])
    assert exit_.value.code == 2
    assert f'--out-file {out} exists; pass --force' in capsys.readouterr().err


def test_image_demo_refuses_a_checkpoint_that_does_not_fit(run, tmp_path):
    """``init_detector`` loads non-strictly: a class head of another size only warned."""
    from mmdeblora.utils import CheckpointMismatchError
    wd, _ = run
    saved = torch.load(osp.join(wd, 'epoch_2.pth'), map_location='cpu', weights_only=True)
    for key in ('roi_head.bbox_head.fc_cls.weight', 'roi_head.bbox_head.fc_cls.bias'):
        saved['state_dict'][key] = saved['state_dict'][key][:11]
    bad = tmp_path / 'ten_classes.pth'
    torch.save(saved, bad)
    img = _image(tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r'does not fit the model of the config:'
                       r'.*another shape \(roi_head.bbox_head.fc_cls.weight: checkpoint '
                       r'\(11, 512\) vs model \(16, 512\)'):
        _tool('demo/image_demo.py').main([img, TOY_CFG, str(bad),
                                          '--out-file', str(tmp_path / 'x.png')])
    # nothing loads: the count of what did not
    torch.save({'state_dict': {'encoder.layer1.weight': torch.zeros(3)}}, bad)
    with pytest.raises(CheckpointMismatchError, match=r'0 of \d+ model tensors loaded'):
        _tool('demo/image_demo.py').main([img, TOY_CFG, str(bad),
                                          '--out-file', str(tmp_path / 'x.png')])
    assert not (tmp_path / 'x.png').exists()


def test_image_demo_never_runs_code_from_a_checkpoint(tmp_path, monkeypatch):
    from mmdeblora.utils import CheckpointFileError
    evil, marker = tmp_path / 'evil.pth', tmp_path / 'PWNED'
    subprocess.run([sys.executable, '-c', EVIL, str(evil), str(marker)], check=True)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    img = _image(tmp_path)
    with pytest.raises(CheckpointFileError, match="refers to 'posix.system'"):
        _tool('demo/image_demo.py').main([img, TOY_CFG, str(evil),
                                          '--out-file', str(tmp_path / 'x.png')])
    assert not marker.exists()
