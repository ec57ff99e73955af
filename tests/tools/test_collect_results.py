import importlib.util
import json
import os
import os.path as osp
import time

import pytest

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location(
    'collect_results', osp.join(REPO, 'tools', 'analysis', 'collect_results.py'))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
last_val_metrics, main = _mod.last_val_metrics, _mod.main


def _write(work_dir, stamp, records):
    d = osp.join(work_dir, stamp, 'vis_data')
    os.makedirs(d)
    with open(osp.join(d, 'scalars.json'), 'w') as f:
        for r in records:
            f.write(json.dumps(r) + '\n')


def test_takes_the_last_validation_of_the_newest_run(tmp_path, capsys):
    wd = str(tmp_path / 'run')
    _write(wd, '20260101_000000', [{'loss': 1.0}, {'dota/mAP': 0.1, 'dota/tail_mAP': 0.0}])
    time.sleep(0.01)
    _write(wd, '20260102_000000', [
        {'dota/mAP': 0.2, 'dota/head_mAP': 0.3, 'dota/middle_mAP': 0.1,
         'dota/tail_mAP': 0.05, 'dota/AP50/ship': 0.4},
        {'loss': 0.5},
        {'dota/mAP': 0.25, 'dota/head_mAP': 0.5, 'dota/middle_mAP': 0.2,
         'dota/tail_mAP': 0.125, 'dota/AP50/ship': 0.6}])
    os.utime(osp.join(wd, '20260101_000000', 'vis_data', 'scalars.json'), (0, 0))
    # a pretty-printed json beside the runs (the debLoRA state) is not a log
    os.makedirs(osp.join(wd, 'deblora'))
    with open(osp.join(wd, 'deblora', 'deblora_state.json'), 'w') as f:
        json.dump({'dota/mAP': 1.0, 'x': [1, 2]}, f, indent=2)
    m = last_val_metrics(wd)
    assert m['mAP'] == 0.25 and m['AP50/ship'] == 0.6
    main([f'LoRA={wd}', '--per-class'])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split('|')[1:-1] == [
        ' run ', ' head_mAP ', ' middle_mAP ', ' tail_mAP ', ' mAP ', ' ship ']
    assert out[2] == '| LoRA | 50.0 | 20.0 | 12.5 | 25.0 | 60.0 |'


def test_run_without_validation_is_an_error(tmp_path):
    wd = str(tmp_path / 'run')
    _write(wd, '20260101_000000', [{'loss': 1.0}])
    with pytest.raises(FileNotFoundError, match='dota/mAP'):
        last_val_metrics(wd)
