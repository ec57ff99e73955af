"""Tail replay's index set: read from the data infos (no image loaded), ignored instances
left out, through mmengine's dataset wrappers; a dataset it cannot index fails by name."""
import pytest
import torch
from mmengine.dataset import BaseDataset, RepeatDataset

from mmdeblora.engine.replay import calibrated_indices, check_replay_source


class Infos(BaseDataset):
    """A real mmengine dataset over in-memory data infos."""
    METAINFO = dict(classes=('a', 'b', 'c'))

    def __init__(self, infos):
        self._infos = infos
        super().__init__(ann_file='', serialize_data=False)

    def load_data_list(self):
        return list(self._infos)


INFOS = [dict(instances=[dict(bbox_label=0)]),
         dict(instances=[dict(bbox_label=1, ignore_flag=1), dict(bbox_label=0)]),
         dict(instances=[dict(bbox_label=1, ignore_flag=0)]),
         dict(gt_label=2)]  # a classification sample: one label, no instances


def test_indices_leave_ignored_instances_out_and_read_classification_labels():
    ds = Infos(INFOS)
    # sample 1's class-1 instance is ignored (mmdet moves it to ignored_instances, so the
    # feature loss never sees it): an image holding it feeds nothing to the pull
    assert calibrated_indices(ds, [False, True, False]) == [2]
    assert calibrated_indices(ds, [True, False, False]) == [0, 1]
    assert calibrated_indices(ds, [False, False, True]) == [3]


def test_indices_through_a_wrapper_without_get_cat_ids():
    ds = RepeatDataset(Infos(INFOS), times=2)
    assert not hasattr(ds, 'get_cat_ids')
    assert calibrated_indices(ds, [False, True, False]) == [2, 6]


def test_a_dataset_without_data_infos_or_instances_fails_by_name():
    class Plain(torch.utils.data.Dataset):
        metainfo = dict(classes=('a',))

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return i

    with pytest.raises(TypeError, match='DebLoRAHook.replay needs a training dataset with '
                                        'get_data_info'):
        check_replay_source(Plain())
    with pytest.raises(ValueError, match='no training sample holds an annotated instance'):
        check_replay_source(Infos([dict(instances=[dict(bbox_label=0, ignore_flag=1)])]))
    check_replay_source(Infos(INFOS))  # readable: no error
