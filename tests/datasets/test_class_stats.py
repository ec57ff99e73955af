"""Class statistics come from the real dataset, honour its filters, and are cached."""
import json
import os
import os.path as osp

import pytest

from mmdeblora.datasets import (DOTA_GROUPS, config_class_stats, load_or_compute_class_stats,
                                resolve_groups)
from tests.conftest import TOY_CFG

LINE = '10 10 30 10 30 20 10 20 {} {}'


def _toy_cfg(root):
    from mmengine.config import Config
    cfg = Config.fromfile(TOY_CFG)
    cfg.train_dataloader.dataset.data_root = root + '/'
    return cfg


def test_auto_counts_equal_generator_summary(toy_root, tmp_path):
    stats = config_class_stats(_toy_cfg(toy_root), work_dir=str(tmp_path))
    with open(osp.join(toy_root, 'summary.json')) as fh:
        summary = json.load(fh)
    assert stats.counts_dict() == summary['counts']['trainval']
    assert stats.num_images == summary['num_images']['trainval']
    cached = json.load(open(tmp_path / 'class_stats.json'))
    assert cached['counts'] == summary['counts']['trainval']


def _write_split(root, files):
    ann = osp.join(root, 'trainval', 'annfiles')
    os.makedirs(ann, exist_ok=True)
    os.makedirs(osp.join(root, 'trainval', 'images'), exist_ok=True)
    for name, lines in files.items():
        with open(osp.join(ann, name + '.txt'), 'w') as fh:
            fh.write(''.join(line + '\n' for line in lines))


def _ds_cfg(root, **kw):
    return dict(type='CheckedDOTADataset', data_root=root + '/',
                ann_file='trainval/annfiles/', data_prefix=dict(img_path='trainval/images/'),
                **kw)


def test_ignored_instances_and_filtered_images(tmp_path):
    root = str(tmp_path / 'data')
    _write_split(root, {
        'a': [LINE.format('plane', 0), LINE.format('plane', 2), LINE.format('ship', 0)],
        'b': [LINE.format('ship', 1)],
        'c': [],  # an image without objects
    })
    # diff_thr=1: difficulty 2 is ignored (mmdet packs it into ignored_instances)
    stats = load_or_compute_class_stats(
        _ds_cfg(root, diff_thr=1, filter_cfg=dict(filter_empty_gt=True)), groups='dota')
    counts = stats.counts_dict()
    assert counts['plane'] == 1 and counts['ship'] == 2 and sum(stats.counts) == 3
    assert stats.num_images == 2  # 'c' filtered out by filter_cfg
    kept = load_or_compute_class_stats(_ds_cfg(root, filter_cfg=dict(filter_empty_gt=False)))
    assert kept.num_images == 3 and kept.counts_dict()['plane'] == 2  # default diff_thr=100


def test_cache_reused_only_when_fingerprint_matches(tmp_path):
    root = str(tmp_path / 'data')
    _write_split(root, {'a': [LINE.format('plane', 0)]})
    wd = str(tmp_path / 'wd')
    load_or_compute_class_stats(_ds_cfg(root), wd)
    path = osp.join(wd, 'class_stats.json')
    data = json.load(open(path))
    data['counts']['plane'] = 99  # a cache hit must return the file's numbers
    json.dump(data, open(path, 'w'))
    assert load_or_compute_class_stats(_ds_cfg(root), wd).counts_dict()['plane'] == 99
    # another diff_thr changes the fingerprint: recounted from the annotations
    assert load_or_compute_class_stats(_ds_cfg(root, diff_thr=5),
                                       wd).counts_dict()['plane'] == 1


def test_groups_from_config_or_counts():
    classes = ['a', 'b', 'c']  # shares 90 %, 9.5 %, 0.5 %: head >= 10 %, tail < 1 %
    assert resolve_groups(classes, [180, 19, 1], 'auto') == dict(
        head=['a'], middle=['b'], tail=['c'])
    assert resolve_groups(classes, [0, 5, 0], dict(head=['b'], middle=['c'], tail=['a'])) \
        == dict(head=['b'], middle=['c'], tail=['a'])
    dota = resolve_groups(['plane', 'harbor', 'helicopter'], [1] * 3, 'dota')
    assert dota == dict(head=['plane'], middle=['harbor'], tail=['helicopter'])
    with pytest.raises(ValueError, match='unknown class'):
        resolve_groups(classes, [1, 1, 1], dict(head=['zebra']))
    # one spelling: the hook's former 'counts' is refused, naming the accepted ones
    with pytest.raises(ValueError, match="'dota', 'auto'"):
        resolve_groups(classes, [1, 1, 1], 'counts')
    with pytest.raises(ValueError, match='needs the per-class training counts'):
        resolve_groups(classes, None, 'auto')
    with pytest.raises(ValueError, match='unknown group names'):
        resolve_groups(classes, None, dict(rare=['a']))


def test_a_spec_that_leaves_a_class_or_a_group_out_is_refused():
    classes = ['a', 'b', 'c']
    # before: b and c in no group, head and middle empty, all without a word
    with pytest.raises(ValueError, match=r"class\(es\) \['b', 'c'\] are in no group; "
                       r"group\(s\) \['head', 'middle'\] are empty"):
        resolve_groups(classes, [0, 5, 0], dict(tail=['a']))
    # 'dota' on names that are not DOTA's: every group empty, every class in none
    with pytest.raises(ValueError, match=r"groups='dota' does not fit .*\['car', 'truck'\] "
                       r"are in no group.*only the 15 DOTA-v1.0 class names"):
        resolve_groups(['car', 'truck'], None, 'dota')
    # a subset of DOTA's classes that leaves a group empty
    with pytest.raises(ValueError, match=r"group\(s\) \['middle'\] are empty"):
        resolve_groups(list(DOTA_GROUPS['head']) + ['helicopter'], [1] * 5, 'dota')
    # 'auto' puts every class somewhere; an empty band and an unseen tail class warn
    import logging

    from mmengine.logging import MMLogger
    logged = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: logged.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        assert resolve_groups(classes, [60, 40, 0], 'auto') == dict(
            head=['a', 'b'], middle=[], tail=['c'])
    finally:
        logger.removeHandler(handler)
    text = '\n'.join(logged)
    assert "no class falls in group(s) ['middle']" in text
    assert "tail class(es) ['c'] have no training instance" in text
