"""Counts, both center weightings, alpha modes and calibration on hand-computed cases."""
import json
import math

import pytest
import torch

from mmdeblora.deblora import (DebiasState, calibrate, calibrated_mask, class_alphas, count_matrix,
                               debiased_centers, feature_loss, fit_debias, loss_scale)

# 2 clusters, 3 classes. Cluster 0: 6 of class 0, 2 of class 2; cluster 1: 2 of class 1,
# 2 of class 2.
CLUSTERS = torch.tensor([0] * 8 + [1] * 4)
CLASSES = torch.tensor([0] * 6 + [2] * 2 + [1] * 2 + [2] * 2)
MU = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def test_count_matrix():
    n = count_matrix(CLUSTERS, CLASSES, 2, 3)
    assert n.tolist() == [[6, 0, 2], [0, 2, 2]]


def test_class_share_centers():
    h = debiased_centers(MU, count_matrix(CLUSTERS, CLASSES, 2, 3), 'class_share')
    # class 2: w = (2/4, 2/4)
    assert torch.allclose(h, torch.tensor([[1, 0], [0, 1], [0.5, 0.5]]))


def test_balanced_centers():
    h = debiased_centers(MU, count_matrix(CLUSTERS, CLASSES, 2, 3), 'balanced')
    # class 2: n_kc / n_k = (2/8, 2/4) -> w = (1/3, 2/3): the head-filled cluster 0 weighs less
    assert torch.allclose(h[2], torch.tensor([1 / 3, 2 / 3]))
    assert torch.allclose(h[:2], MU)


def test_top_cluster_centers():
    # 3 clusters, 3 classes: class 0 mostly in cluster 0, class 1 in cluster 2, class 2
    # split 2 / 3 / 0 between clusters 0 and 1 -> cluster 1 (its largest share), even
    # though cluster 1 holds fewer instances in all than cluster 0
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    counts = torch.tensor([[9, 0, 2], [1, 0, 3], [0, 4, 0]])
    h = debiased_centers(mu, counts, 'top_cluster')
    assert torch.equal(h, mu[[0, 2, 1]])
    # a tie goes to the lowest cluster index; an absent class stays finite
    counts = torch.tensor([[2, 0], [2, 0], [0, 0]])
    h = debiased_centers(mu, counts, 'top_cluster')
    assert torch.equal(h[0], mu[0]) and torch.isfinite(h[1]).all()


def test_absent_class_gets_finite_center_and_zero_alpha():
    counts = torch.tensor([[3, 0], [1, 0]])
    h = debiased_centers(MU, counts, 'balanced')
    assert torch.isfinite(h).all()
    assert torch.allclose(h[1], torch.tensor([0.75, 0.25]))  # size-weighted data mean
    a = class_alphas([4, 0], [True, True], 'imbalance')
    assert a.tolist() == [0.5, 0.0]


def test_alpha_fixed_and_imbalance():
    counts = [100, 10, 1, 50]
    cal = [False, True, True, True]
    assert class_alphas(counts, cal, 'fixed', alpha=0.3).tolist() == pytest.approx(
        [0, 0.3, 0.3, 0.3])
    a = class_alphas(counts, cal, 'imbalance', alpha_max=0.8)
    expect = [0, 0.8 * math.log(10) / math.log(100), 0.8, 0.8 * math.log(2) / math.log(100)]
    assert a.tolist() == pytest.approx(expect, rel=1e-5)
    # no imbalance: every calibrated class gets alpha_max
    assert class_alphas([5, 5], [True, False], 'imbalance').tolist() == [0.5, 0]
    with pytest.raises(ValueError):
        class_alphas(counts, cal, 'bogus')


def test_calibrate_moves_only_calibrated_classes():
    z = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    y = torch.tensor([0, 1])
    h = torch.tensor([[9.0, 9.0], [0.0, 4.0]])
    out = calibrate(z, y, h, torch.tensor([0.0, 0.25]))
    assert torch.allclose(out, torch.tensor([[0.0, 0.0], [1.5, 2.5]]))


def test_calibrated_mask():
    groups = dict(head=['a'], tail=['c'], middle=['b'])
    assert calibrated_mask(3, ['a', 'b', 'c'], groups) == [False, False, True]
    assert calibrated_mask(3, ['a', 'b', 'c'], groups, ('tail', 'middle')) == [
        False, True, True]
    with pytest.raises(ValueError, match='unknown group'):
        calibrated_mask(3, ['a', 'b', 'c'], groups, ('rare',))


def test_fit_debias_zero_class_fewer_than_k_and_roundtrip(tmp_path):
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(10, 4), dim=1)
    y = torch.tensor([0] * 8 + [1] * 2)  # class 2 has no instance, 10 points < K=32
    st = fit_debias(z, y, ['a', 'b', 'c'], [False, True, True], num_clusters=32,
                    alpha_mode='imbalance')
    assert st.centers.shape == (10, 4) and st.counts.sum() == 10
    assert st.class_counts.tolist() == [8, 2, 0]
    assert st.alphas[2] == 0 and st.alphas[1] == pytest.approx(0.5)
    # a class without training instances is not listed as calibrated
    assert st.calibrated.tolist() == [False, True, False] and st.calibrated_names == ['b']
    assert torch.isfinite(st.class_centers).all()
    z_hat = calibrate(z, y, st.class_centers, st.alphas, renormalize=True)
    # no cap: natural shares = extracted shares; the mean gap of a calibrated instance
    gap = ((z - z_hat) ** 2).sum(1)[y == 1].mean()
    assert gap > 0 and st.loss_scale == pytest.approx(float(gap), rel=1e-5)
    st.save(str(tmp_path))
    meta = json.load(open(tmp_path / 'deblora_state.json'))
    assert meta['calibrated'] == ['b'] and meta['natural_counts'] == dict(a=8, b=2, c=0)
    back = DebiasState.load(str(tmp_path))
    assert torch.equal(back.counts, st.counts) and torch.equal(back.alphas, st.alphas)
    assert back.class_names == st.class_names and back.weighting == st.weighting
    assert torch.equal(back.natural_counts, st.natural_counts)
    back2 = DebiasState.from_dict(st.to_dict())
    assert torch.equal(back2.class_centers, st.class_centers)


def test_renormalized_targets_are_reachable_unit_vectors():
    z = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    h = torch.tensor([[0.0, 0.5], [0.0, 0.5]])  # a mix of centers: norm < 1
    a = torch.tensor([0.5, 0.0])
    plain = calibrate(z, torch.tensor([0, 1]), h, a)
    on = calibrate(z, torch.tensor([0, 1]), h, a, renormalize=True)
    assert plain[0].norm() < 0.8  # off the sphere: no normalised feature reaches it
    assert on[0].norm() == pytest.approx(1.0)
    assert torch.allclose(on[0], plain[0] / plain[0].norm())
    assert torch.equal(on[1], z[1])  # alpha 0: unchanged


def test_loss_scale_uses_natural_shares_not_the_cap():
    """Capping the head (max_per_class) changes the extracted shares; the scale must not
    move: it is the expected gap of a training instance under the natural counts."""
    gen = torch.Generator().manual_seed(0)
    natural = [1000, 10]  # head, tail
    y_all = torch.tensor([0] * 1000 + [1] * 10)
    z = torch.nn.functional.normalize(torch.randn(1010, 8, generator=gen), dim=1)
    h = torch.nn.functional.normalize(torch.randn(2, 8, generator=gen), dim=1)
    a = torch.tensor([0.0, 0.5])
    z_hat = calibrate(z, y_all, h, a, renormalize=True)
    full = loss_scale(z, z_hat, y_all, natural, [False, True])
    keep = torch.cat([torch.arange(20), torch.arange(1000, 1010)])  # cap 20 per class
    capped = loss_scale(z[keep], z_hat[keep], y_all[keep], natural, [False, True])
    assert capped == pytest.approx(full, rel=1e-6)
    # per calibrated instance, not per training instance: 101x the tail-diluted mean
    tail_gap = ((z - z_hat) ** 2).sum(1)[1000:].mean()
    assert full == pytest.approx(float(tail_gap), rel=1e-6)
    # the old definition (mean over the extracted set) moves with the cap by ~20x
    old_full = ((z - z_hat) ** 2).sum(1).mean()
    old_capped = ((z[keep] - z_hat[keep]) ** 2).sum(1).mean()
    assert old_capped / old_full > 10


def test_imbalance_alphas_and_no_calibrated_class():
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(30, 4), dim=1)
    y = torch.tensor([0] * 10 + [1] * 10 + [2] * 10)  # capped: equal extracted counts
    st = fit_debias(z, y, ['h', 'm', 't'], [False, True, True], num_clusters=4,
                    natural_counts=[1000, 100, 10], alpha_mode='imbalance')
    # alphas follow the natural imbalance, not the capped (equal) counts
    assert st.alphas.tolist() == pytest.approx([0, 0.25, 0.5], abs=1e-6)
    with pytest.raises(ValueError, match='no class to calibrate'):
        fit_debias(z, y, ['h', 'm', 't'], [False, True, True], num_clusters=4,
                   natural_counts=[1000, 0, 0])


def test_feature_loss_is_two_means_so_the_tail_share_does_not_scale_it():
    z = torch.zeros(6, 2, requires_grad=True)
    t = torch.tensor([[1.0, 0], [0, 2.0], [0, 0], [0, 0], [0, 0], [3.0, 0]])
    cal = torch.tensor([True, True, False, False, False, False])
    # calibrated mean (1 + 4) / 2 plus uncalibrated mean (0 + 0 + 0 + 9) / 4
    assert float(feature_loss(z, t, cal)) == pytest.approx(2.5 + 2.25)
    # the calibration term does not shrink when more uncalibrated instances come along
    z2, t2 = torch.cat([z[:2], torch.zeros(100, 2)]), torch.cat([t[:2], torch.zeros(100, 2)])
    cal2 = torch.cat([cal[:2], torch.zeros(100, dtype=torch.bool)])
    assert float(feature_loss(z2, t2, cal2)) == pytest.approx(2.5)
    # an empty part adds nothing; an empty batch is 0 and keeps the graph
    assert float(feature_loss(z[2:], t[2:], cal[2:])) == pytest.approx(2.25)
    empty = feature_loss(z[:0], t[:0], cal[:0])
    assert float(empty) == 0 and empty.requires_grad


def test_hold_weight_weighs_the_held_instances_and_zero_drops_them():
    z = torch.zeros(4, 2, requires_grad=True)
    t = torch.tensor([[1.0, 0], [0, 2.0], [3.0, 0], [0, 0]])
    cal = torch.tensor([True, True, False, False])
    # calibrated mean (1 + 4) / 2 plus w times the held mean (9 + 0) / 2
    assert float(feature_loss(z, t, cal, hold_weight=0.5)) == pytest.approx(2.5 + 2.25)
    loss = feature_loss(z, t, cal, hold_weight=0.0)
    assert float(loss) == pytest.approx(2.5)
    loss.backward()
    assert z.grad[2:].abs().sum() == 0 and z.grad[:2].abs().sum() > 0
    # only held instances and no hold: 0, still connected to z
    only_held = feature_loss(z[2:], t[2:], cal[2:], hold_weight=0.0)
    assert float(only_held) == 0 and only_held.requires_grad


def test_hold_weight_reaches_the_plan_and_is_checked():
    from mmdeblora.deblora import Stage2Settings
    from mmdeblora.deblora.plan import Stage2Plan
    with pytest.raises(ValueError, match='hold_weight'):
        Stage2Settings(hold_weight=-1.0)
    state = DebiasState(centers=torch.eye(2), counts=torch.ones(2, 2, dtype=torch.long),
                        class_centers=torch.eye(2), alphas=torch.tensor([0.0, 0.5]),
                        calibrated=torch.tensor([False, True]), class_names=['h', 't'])
    plan = Stage2Plan.build(state, Stage2Settings(hold_weight=0.0, loss_normalize=False,
                                                  loss_weight=1.0))
    assert plan.hold_weight == 0.0
    z = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # the held one is 2 away, ignored
    assert float(plan.feature_loss(z, targets, labels)) == 0.0
    assert float(plan.replace(hold_weight=1.0).feature_loss(z, targets, labels)) == 2.0


def test_balanced_centers_with_unlabelled_instances_in_the_cluster_sizes():
    counts = count_matrix(CLUSTERS, CLASSES, 2, 3)
    # 4 unlabelled pool instances in cluster 1: n_k = (8, 8); class 2: (2/8, 2/8) -> 1/2
    h = debiased_centers(MU, counts, 'balanced', sizes=torch.tensor([8, 8]))
    assert torch.allclose(h[2], torch.tensor([0.5, 0.5]))
    # class_share reads no sizes: as without a pool
    assert torch.equal(debiased_centers(MU, counts, 'class_share', torch.tensor([8, 8])),
                       debiased_centers(MU, counts, 'class_share'))
    with pytest.raises(ValueError, match='at least the labelled counts'):
        debiased_centers(MU, counts, 'balanced', sizes=torch.tensor([7, 4]))


def test_fit_debias_with_a_pool_clusters_it_without_labels_and_roundtrips(tmp_path):
    g = torch.Generator().manual_seed(0)
    head = torch.tensor([1.0, 0, 0]) + 0.01 * torch.randn(40, 3, generator=g)
    tail = torch.tensor([0, 1.0, 0]) + 0.01 * torch.randn(2, 3, generator=g)
    z = torch.cat([head, tail])
    y = torch.tensor([0] * 40 + [1] * 2)
    # the pool: 18 more instances on the tail's blob, 6 on a third blob no label has
    pool = torch.cat([torch.tensor([0, 1.0, 0]) + 0.01 * torch.randn(18, 3, generator=g),
                      torch.tensor([0, 0, 1.0]) + 0.01 * torch.randn(6, 3, generator=g)])
    st = fit_debias(z, y, ['h', 't'], [False, True], num_clusters=3, unlabelled_z=pool)
    alone = fit_debias(z, y, ['h', 't'], [False, True], num_clusters=3)
    assert st.counts.sum() == 42 and st.class_counts.tolist() == [40, 2]
    assert int(st.unlabelled_counts.sum()) == 24 and alone.unlabelled_counts is None
    assert sorted(st.cluster_sizes.tolist()) == [6, 20, 40]
    # the tail's cluster center is the mean of its 2 labelled and 18 unlabelled members
    tail_k = int(st.counts[:, 1].argmax())
    members = torch.cat([tail, pool[:18]]).mean(0)
    assert torch.allclose(st.centers[tail_k], members, atol=1e-5)
    assert torch.allclose(st.class_centers[1], members, atol=1e-5)
    # alphas and the loss scale are the labelled set's
    assert torch.equal(st.alphas, alone.alphas)
    st.save(str(tmp_path))
    back = DebiasState.load(str(tmp_path))
    assert torch.equal(back.unlabelled_counts, st.unlabelled_counts)
    assert torch.equal(back.cluster_sizes, st.cluster_sizes)
    assert json.load(open(tmp_path / 'deblora_state.json'))['cluster_sizes'] == \
        st.cluster_sizes.tolist()
    back2 = DebiasState.from_dict(st.to_dict())
    assert torch.equal(back2.unlabelled_counts, st.unlabelled_counts)
    (tmp_path / 'alone').mkdir()
    alone.save(str(tmp_path / 'alone'))
    assert DebiasState.load(str(tmp_path / 'alone')).unlabelled_counts is None
