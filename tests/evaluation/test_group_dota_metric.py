import json

import numpy as np
import pytest
import torch
from mmrotate.evaluation import DOTAMetric

from mmdeblora.datasets import DOTA_CLASSES, DOTA_GROUPS
from mmdeblora.evaluation import GroupDOTAMetric

CLS = list(DOTA_CLASSES)


def _samples(rng):
    """Images where head classes are found exactly, middle ones half, tail ones never."""
    samples = []
    for img in range(6):
        boxes, labels, pb, ps, pl = [], [], [], [], []
        for k, c in enumerate(CLS):
            box = [20.0 + 60 * (k % 5), 20.0 + 60 * (k // 5), 30, 12, rng.uniform(-1, 1)]
            boxes.append(box)
            labels.append(k)
            if c in DOTA_GROUPS['head'] or (c in DOTA_GROUPS['middle'] and img % 2):
                pb.append(box)
            else:  # a confident false positive far away from the object
                pb.append([box[0] + 200, box[1] + 200, 30, 12, 0.0])
            ps.append(rng.uniform(0.5, 1.0))
            pl.append(k)
        t = torch.tensor
        samples.append(dict(
            img_id=f'img{img}',
            gt_instances=dict(bboxes=t(boxes), labels=t(labels)),
            ignored_instances=dict(bboxes=torch.zeros(0, 5), labels=torch.zeros(0)),
            pred_instances=dict(bboxes=t(pb), scores=t(ps), labels=t(pl))))
    return samples


def _run(metric, samples):
    metric.dataset_meta = dict(classes=CLS)
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)


@pytest.mark.parametrize('iou_thrs', [0.5, [0.5, 0.75]])
def test_overall_map_equals_dotametric_and_groups_are_right(iou_thrs):
    samples = _samples(np.random.RandomState(0))
    ref = _run(DOTAMetric(iou_thrs=iou_thrs), samples)
    ours = _run(GroupDOTAMetric(iou_thrs=iou_thrs, nproc=1), samples)
    assert ours['mAP'] == ref['mAP']
    assert ours['head_mAP'] == pytest.approx(1.0)
    assert ours['tail_mAP'] == pytest.approx(0.0)
    assert 0.2 < ours['middle_mAP'] < 0.9
    if isinstance(iou_thrs, float):
        assert ours['AP50/plane'] == pytest.approx(1.0)
        assert ours['AP50/helicopter'] == pytest.approx(0.0)
        per_class = np.array([ours[f'AP50/{c}'] for c in CLS])
        assert per_class.mean() == pytest.approx(ours['mAP'])


def test_groups_from_counts_and_from_a_json(tmp_path):
    samples = _samples(np.random.RandomState(1))
    # plane holds >= 10 % of the instances (head), helicopter < 1 % (tail)
    counts = [100] * 15
    counts[CLS.index('plane')] = 1000
    counts[CLS.index('helicopter')] = 1
    res = _run(GroupDOTAMetric(groups='auto', class_counts=counts, nproc=1), samples)
    assert res['head_mAP'] == pytest.approx(res['AP50/plane'])
    assert res['tail_mAP'] == pytest.approx(res['AP50/helicopter'])
    middle = [res[f'AP50/{c}'] for c in CLS if c not in ('plane', 'helicopter')]
    assert res['middle_mAP'] == pytest.approx(np.mean(middle))
    path = tmp_path / 'counts.json'
    path.write_text(json.dumps(dict(zip(CLS, counts))))
    res2 = _run(GroupDOTAMetric(groups='auto', class_counts=str(path), nproc=1), samples)
    assert res2['head_mAP'] == res['head_mAP']


def test_bad_group_config_is_an_error():
    with pytest.raises(ValueError, match="'dota', 'auto'"):
        GroupDOTAMetric(groups='lvis')
    # checked when the runner hands the metric its classes, before training
    m = GroupDOTAMetric(groups=dict(head=['plane'], tail=['plane']))
    with pytest.raises(ValueError, match='in groups'):
        m.dataset_meta = dict(classes=CLS)
    m = GroupDOTAMetric(groups=dict(head=['aeroplane']))
    with pytest.raises(ValueError, match='unknown class'):
        m.dataset_meta = dict(classes=CLS)
    with pytest.raises(ValueError, match=r"groups='auto'\) needs the training counts.*"
                       'class_stats.json'):
        GroupDOTAMetric(groups='auto').dataset_meta = dict(classes=CLS)


def test_dota_groups_on_other_classes_are_refused():
    # before: every group empty (all nan) or 'car' silently in none
    with pytest.raises(ValueError, match=r"GroupDOTAMetric.groups='dota' does not fit .*"
                       r"\['car', 'truck'\] are in no group; group\(s\) "
                       r"\['head', 'middle', 'tail'\] are empty"):
        GroupDOTAMetric(groups='dota').dataset_meta = dict(classes=['car', 'truck'])
    with pytest.raises(ValueError, match=r"\['car'\] are in no group"):
        GroupDOTAMetric(groups='dota').dataset_meta = dict(classes=CLS + ['car'])


def test_auto_groups_read_the_data_sets_training_counts():
    samples = _samples(np.random.RandomState(1))
    counts = [100] * 15
    counts[CLS.index('plane')] = 1000
    counts[CLS.index('helicopter')] = 1
    metric = GroupDOTAMetric(groups='auto', nproc=1)
    metric.dataset_meta = dict(classes=CLS, train_counts=counts)  # as GroupF1Metric reads
    assert metric.class_groups()['head'] == ['plane']
    metric.process({}, samples)
    res = metric.compute_metrics(metric.results)
    assert res['tail_mAP'] == pytest.approx(res['AP50/helicopter'])


def test_nproc_1_counts_in_this_process_and_puts_upstream_back(monkeypatch):
    """Upstream spawns a pool whatever nproc is (seconds per evaluation on a small CPU);
    nproc=1 maps in this process, with the same numbers (the test above compares it with
    DOTAMetric's pool), and leaves mmrotate's module as it was."""
    from mmrotate.evaluation.functional import mean_ap

    def no_pool(method=None):
        raise AssertionError('a process pool was started')

    monkeypatch.setattr(mean_ap, 'get_context', no_pool)
    samples = _samples(np.random.RandomState(0))
    res = _run(GroupDOTAMetric(nproc=1), samples)
    assert res['head_mAP'] == pytest.approx(1.0)
    assert mean_ap.get_context is no_pool
    with pytest.raises(AssertionError, match='process pool'):
        _run(GroupDOTAMetric(nproc=2), samples)
    assert mean_ap.get_context is no_pool
