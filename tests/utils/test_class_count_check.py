"""More class names in a data set than a head's num_classes is refused from the config,
naming both keys; the shipped configs pass."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from mmdeblora.datasets import DOTA_CLASSES
from mmdeblora.utils.class_count_check import ClassCountError, check_class_counts, head_class_counts
from mmdeblora.utils.launch import register_all
from tests.conftest import REPO, TOY_CFG

DEFAULT_SCOPE = 'mmrotate'
TWENTY = [f'class{i}' for i in range(20)]


def _toy(**options) -> Config:
    register_all()
    cfg = Config.fromfile(TOY_CFG)
    cfg.merge_from_dict(options)
    return cfg


def test_twenty_data_classes_and_a_fifteen_class_head_are_refused():
    cfg = _toy(**{'train_dataloader.dataset.metainfo': dict(classes=TWENTY)})
    with pytest.raises(ClassCountError, match=re_escape(
            'train_dataloader.dataset.metainfo.classes has 20 class names, more than the '
            'model has: model.roi_head.bbox_head.num_classes=15. Classes [\'class15\', '
            "'class16', 'class17', 'class18', 'class19'] have no output there (a detector "
            'trains them as background)')):
        check_class_counts(cfg)
    cfg.model.roi_head.bbox_head.num_classes = 20  # the fix the message asks for
    check_class_counts(cfg)


def test_dota_default_classes_wrappers_and_cascade_heads():
    # no metainfo: mmrotate's DOTADataset.METAINFO (15 classes) against a 10-class head
    cfg = _toy(**{'model.roi_head.bbox_head.num_classes': 10})
    with pytest.raises(ClassCountError, match=re_escape(
            "train_dataloader.dataset (CheckedDOTADataset's default classes) has 15 class "
            'names')):
        check_class_counts(cfg)
    # a RepeatDataset around the data set, a cascade of three bbox heads, one too small
    cfg = _toy()
    cfg.train_dataloader.dataset = dict(type='RepeatDataset', times=2,
                                        dataset=dict(cfg.train_dataloader.dataset))
    head = dict(cfg.model.roi_head.bbox_head)
    cfg.model.roi_head.bbox_head = [head, dict(head, num_classes=12), head]
    with pytest.raises(ClassCountError, match=re_escape(
            "train_dataloader.dataset.dataset (CheckedDOTADataset's default classes) has 15 "
            'class names, more than the model has: model.roi_head.bbox_head[1]'
            '.num_classes=12')):
        check_class_counts(cfg)
    # the RPN head (object / not object) is no class head
    assert [k for k, _ in head_class_counts(_toy().model)] == [
        'model.roi_head.bbox_head.num_classes']


def test_mmpretrain_head_and_classes_argument():
    cfg = Config(dict(
        model=dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=18),
                   head=dict(type='LinearClsHead', num_classes=3, in_channels=512)),
        train_dataloader=dict(dataset=dict(
            type='ClassBalancedDataset', oversample_thr=0.1,
            dataset=dict(type='DOTACropDataset', data_root='x', classes=['a', 'b', 'c', 'd'],
                         _scope_='mmpretrain')))))
    with pytest.raises(ClassCountError, match=re_escape(
            'train_dataloader.dataset.dataset.classes has 4 class names, more than the '
            "model has: model.head.num_classes=3. Classes ['d']")):
        check_class_counts(cfg)
    # no classes given: DOTACropDataset's 15 DOTA classes
    del cfg.train_dataloader.dataset.dataset['classes']
    with pytest.raises(ClassCountError, match="DOTACropDataset's default classes\\) has 15"):
        check_class_counts(cfg)
    cfg.model.head.num_classes = len(DOTA_CLASSES)
    check_class_counts(cfg)


def test_shipped_configs_pass():
    register_all()
    paths = sorted(glob.glob(osp.join(REPO, 'configs', '*', '*.py')))
    assert len(paths) > 20
    for path in paths:
        cfg = Config.fromfile(path)
        from mmengine.registry import DefaultScope
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmrotate')):
            check_class_counts(cfg)


def re_escape(text: str) -> str:
    import re
    return re.escape(text)
