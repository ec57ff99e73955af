"""One Oriented R-CNN training iteration per long-tail baseline through tools/train.py:
ClassStatsHook counts the real training set and hands the counts / groups to the loss or
head built with 'auto', which then trains and validates."""
import glob
import json
import os.path as osp
import re
from collections import Counter

import pytest

from tests.conftest import REPO, run_tool, toy_options

BASELINES = {  # config -> the module that must receive the statistics
    'reweight': 'roi_head.bbox_head.loss_cls',
    'ecm': 'roi_head.bbox_head.loss_cls',
    'reslt': 'roi_head.bbox_head',
}
# one iteration: two training images in one batch, one validation image
ONE_ITER = ['train_dataloader.batch_size=2', 'train_dataloader.dataset.indices=2',
            'val_dataloader.dataset.indices=1']


def _first_images_counts(root: str, n: int) -> Counter:
    """Instances per class in the first ``n`` annotation files (the dataset sorts ids)."""
    counts: Counter = Counter()
    for txt in sorted(glob.glob(osp.join(root, 'trainval', 'annfiles', '*.txt')))[:n]:
        counts.update(line.split()[8] for line in open(txt).read().splitlines())
    return counts


@pytest.mark.parametrize('name', sorted(BASELINES))
def test_one_training_iteration(name, toy_root, tmp_path):
    cfg = osp.join(REPO, 'configs', 'baselines', f'oriented_rcnn_r18_lora_{name}_toy.py')
    proc = run_tool('train.py', cfg, '--work-dir', str(tmp_path),
                    *toy_options(toy_root, ONE_ITER))
    log = proc.stdout + proc.stderr
    given = re.findall(r'ClassStatsHook: .* given to (\[.*\])', log)
    assert given and BASELINES[name] in given[-1]
    losses = re.findall(r'Epoch\(train\) \[1\]\[1/1\].* loss_cls: ([0-9.]+)', log)
    assert losses and float(losses[-1]) > 0
    assert 'dota/mAP' in log and osp.isfile(tmp_path / 'epoch_1.pth')
    stats = json.load(open(tmp_path / 'class_stats.json'))
    expected = _first_images_counts(toy_root, 2)
    assert {c: n for c, n in stats['counts'].items() if n} == dict(expected)
