import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from mmdeblora.datasets import DOTA_CLASSES, DOTA_GROUPS
from mmdeblora.evaluation import GroupF1Metric

CLASSES = list(DOTA_CLASSES)


def _run(metric, pred, gt, scores=False):
    metric.dataset_meta = dict(classes=CLASSES, **getattr(metric, '_meta', {}))
    samples = []
    for p, g in zip(pred, gt):
        s = dict(gt_label=torch.tensor([g]))
        if scores:
            s['pred_score'] = torch.nn.functional.one_hot(torch.tensor(p), len(CLASSES)).float()
        else:
            s['pred_label'] = torch.tensor([p])
        samples.append(s)
    metric.process(None, samples)
    return metric.evaluate(len(samples))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_group_scores_equal_sklearn_macro_f1(seed):
    rng = np.random.RandomState(seed)
    gt = rng.randint(0, 15, 400)
    pred = np.where(rng.rand(400) < 0.6, gt, rng.randint(0, 15, 400))
    pred[pred == 3] = 4          # a class never predicted (F1 0)
    gt[gt == 14] = 13            # and one never present (F1 0, as sklearn)
    res = _run(GroupF1Metric(groups='dota'), pred, gt, scores=seed == 1)
    for g, names in DOTA_GROUPS.items():
        labels = [CLASSES.index(c) for c in names]
        want = 100 * f1_score(gt, pred, average='macro', labels=labels, zero_division=0)
        assert res[f'{g}_f1'] == pytest.approx(want, abs=1e-4), g
    want = 100 * f1_score(gt, pred, average='macro', labels=list(range(15)), zero_division=0)
    assert res['macro_f1'] == pytest.approx(want, abs=1e-4)
    assert res['accuracy'] == pytest.approx(100 * accuracy_score(gt, pred), abs=1e-6)
    per_class = 100 * f1_score(gt, pred, average=None, labels=list(range(15)),
                               zero_division=0)
    for c, v in zip(CLASSES, per_class):
        assert res[f'f1/{c}'] == pytest.approx(v, abs=1e-4)


def test_groups_come_from_the_dataset_when_not_given():
    rest = [c for c in CLASSES if c not in ('plane', 'helicopter', 'bridge')]
    groups = dict(head=['plane'], middle=rest, tail=['helicopter', 'bridge'])
    metric = GroupF1Metric(classwise=False)
    metric._meta = dict(groups=groups)
    gt = [0, 0, 6, 14, 2, 2]
    pred = [0, 6, 6, 14, 14, 2]
    res = _run(metric, pred, gt)
    labels = [CLASSES.index(c) for c in groups['tail']]
    assert res['tail_f1'] == pytest.approx(
        100 * f1_score(gt, pred, average='macro', labels=labels, zero_division=0), abs=1e-4)
    assert not any(k.startswith('f1/') for k in res)


def test_bad_group_spec_fails_at_build():
    with pytest.raises(ValueError, match='groups'):
        GroupF1Metric(groups='counts')


def test_groups_that_match_no_class_are_refused_when_the_classes_are_set():
    metric = GroupF1Metric(groups='dota')
    with pytest.raises(ValueError, match=r"GroupF1Metric.groups='dota' does not fit .*"
                       r"\['car', 'truck', 'bus'\] are in no group"):
        metric.dataset_meta = dict(classes=['car', 'truck', 'bus'])
    metric = GroupF1Metric()  # the data set's groups, leaving 'ship' out
    with pytest.raises(ValueError, match=r"the data set's groups .*\['ship'\] are in no "
                       'group'):
        metric.dataset_meta = dict(
            classes=['plane', 'ship', 'helicopter', 'harbor'],
            groups=dict(head=['plane'], middle=['harbor'], tail=['helicopter']))
