"""Premise pre-checks a-c of tools/analysis/bias_diagnostics.py on constructed features
whose answer is known: the switch's own K-means and weighting, no model."""
import importlib.util
import os.path as osp

import pytest
import torch

from mmdeblora.engine import DebiasSettings
from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location(
    'bias_diagnostics_tool', osp.join(REPO, 'tools', 'analysis', 'bias_diagnostics.py'))
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

CLASSES = ['h0', 'h1', 'm0', 't0', 't1']
GROUPS = dict(head=['h0', 'h1'], middle=['m0'], tail=['t0', 't1'])
# four training blobs, so K = 4 finds them: K-means and the weighting are the switch's
SETTINGS = DebiasSettings(num_clusters=4, groups=GROUPS, where='test')
# held out: every class on an axis of its own
HELD = [(0, 0, 30), (1, 1, 30), (2, 2, 30), (3, 3, 30), (4, 4, 30)]


def _features(parts, spread=0.02, seed=0):
    """Points around basis vectors: ``parts`` = [(class index, axis, n), ...], labels
    and dummy predictions (numbers a-c do not read them)."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c, axis, n in parts:
        xs.append(torch.eye(6)[axis] + spread * torch.randn(n, 6, generator=g))
        ys.append(torch.full((n, ), c))
    x, y = torch.cat(xs), torch.cat(ys)
    return x, y, y.clone()


def test_centers_are_the_switch_s_and_beat_a_misrepresenting_training_mean():
    # t0: 3 typical training instances on an axis of their own, 7 atypical ones inside
    # h1's blob; held out, t0 is typical. t1: all of its training instances inside h1's
    # blob, held out on an axis of its own: its h_c is h1's cluster
    train = _features([(0, 0, 200), (1, 1, 200), (2, 2, 60), (3, 3, 3), (3, 1, 7),
                       (4, 1, 10)])
    held = _features(HELD, seed=1)
    res = tool.premise_numbers(train, held, CLASSES, GROUPS, SETTINGS)
    t0, t1 = res['centers']['t0'], res['centers']['t1']
    # balanced weighting: t0 is the whole of the cluster its typical instances make and
    # 7 of 217 of h1's, so h_t0 sits by the typical axis; the training mean does not
    assert t0['own_nearest'] and t0['nearest'] == 't0'
    assert t0['ratio'] < 0.2
    assert t1['nearest'] == 'h1' and not t1['own_nearest']
    assert t1['ratio'] == pytest.approx(1, abs=0.05)
    assert res['centers_own_nearest'] == 1 and res['centers_compared'] == 2
    assert res['center_mean_ratio'] == pytest.approx((t0['ratio'] + t1['ratio']) / 2)
    # the tail spread is read on the held-out features
    assert set(res['tail_spread_per_class']) == {'t0', 't1'}


def test_prechecks_read_the_model_against_the_oracle():
    # t1 typical in training too: five blobs, K = 5
    train = _features([(0, 0, 200), (1, 1, 200), (2, 2, 60), (3, 3, 3), (3, 1, 7),
                       (4, 4, 10)])
    settings = DebiasSettings(num_clusters=5, groups=GROUPS, where='test')
    out = {}
    for side, spread in (('model', 0.3), ('oracle', 0.05)):
        held = _features(HELD, spread, seed=1)
        out[side] = dict(premise=tool.premise_numbers(train, held, CLASSES, GROUPS,
                                                      settings))
    out.update(prechecks={}, passed={})
    tool.premise_prechecks(out)
    p, ok = out['prechecks'], out['passed']
    assert p['a_tail_spread_ratio'] > 1.5 and ok['a']      # the model's tail is scattered
    assert p['b_centers_own_nearest'] == 2 and ok['b']      # t1's h_c is its own cluster
    assert p['c_center_mean_ratio'] < 1 and ok['c']
    # the same features on both sides: ratio 1, pre-check a fails
    out['oracle'] = out['model']
    tool.premise_prechecks(out)
    assert out['prechecks']['a_tail_spread_ratio'] == pytest.approx(1)
    assert not out['passed']['a']
    # two tail classes whose h_c is nearest another class: b fails
    out['model']['premise'].update(centers_own_nearest=0)
    tool.premise_prechecks(out)
    assert not out['passed']['b']


def test_report_and_aggregate_show_the_premise(tmp_path):
    train = _features([(0, 0, 200), (1, 1, 200), (2, 2, 60), (3, 3, 3), (3, 1, 7),
                       (4, 1, 10)])
    held = _features(HELD, seed=1)
    side = tool.side_numbers(train, held, CLASSES, GROUPS, dict(t0='h0', t1='h1'), 3, 0,
                             SETTINGS)
    res = dict(split='val', model=side, oracle=side,
               prechecks={'1_tail_f1_gap': 0.0, '2_probe_tail_f1_gap': 0.0,
                          '3_sibling_distance_ratio': 1.0},
               passed={'1': False, '2': False, '3': False})
    tool.premise_prechecks(res)
    text = tool.format_report(res)
    assert 'premise b (h_c nearest its own held-out centroid, all but one): 1 of 2' in text
    assert 't1' in text and 'h1' in text  # the per-class line names h_c's nearest class
    old = dict(res, prechecks=dict(list(res['prechecks'].items())[:3]),
               passed=dict(list(res['passed'].items())[:3]))
    old['model'] = old['oracle'] = {k: v for k, v in side.items() if k != 'premise'}
    agg = tool.aggregate([res, old])  # a file written before a-c: NaN, not a crash
    assert 'pre-check c_center_mean_ratio' in agg and 'passed in' in agg


def test_an_unlabelled_pool_makes_h_c_the_better_estimate_of_an_undersampled_class():
    """The premise from more data (``cluster_pool``): t1 has 4 noisy training instances
    around its axis; 200 unlabelled ones join K-means, so its cluster's center (h_c) is
    the class as held out, while its training mean keeps the noise of 4 draws."""
    g = torch.Generator().manual_seed(3)
    train = _features([(0, 0, 200), (1, 1, 200), (2, 2, 60), (3, 3, 30)])
    noisy = torch.eye(6)[4] + 0.3 * torch.randn(4, 6, generator=g)
    train = (torch.cat([train[0], noisy]), torch.cat([train[1], torch.full((4, ), 4)]),
             torch.cat([train[2], torch.full((4, ), 4)]))
    held = _features(HELD, seed=1)
    pool = _features([(4, 4, 200), (0, 0, 100)], seed=2)[0]
    settings = DebiasSettings(num_clusters=5, groups=GROUPS, where='test')
    alone = tool.premise_numbers(train, held, CLASSES, GROUPS, settings)
    pooled = tool.premise_numbers(train, held, CLASSES, GROUPS, settings, pool)
    # alone, t1's 4 instances are a cluster of their own: h_c is their mean
    assert alone['centers']['t1']['ratio'] == pytest.approx(1, abs=1e-3)
    assert alone['pool_instances'] == 0 and pooled['pool_instances'] == 300
    assert pooled['centers']['t1']['ratio'] < 0.3 and pooled['centers']['t1']['own_nearest']
    # t0 is well sampled and its cluster unchanged by the pool: the same estimate
    assert pooled['centers']['t0']['ratio'] == pytest.approx(alone['centers']['t0']['ratio'],
                                                             abs=1e-3)
