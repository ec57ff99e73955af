import pytest
import torch

from mmdeblora.evaluation import bias_diagnostics as bd

CLASSES = ['h0', 'h1', 'm0', 't0']
GROUPS = dict(head=['h0', 'h1'], middle=['m0'], tail=['t0'])


def _blobs(counts, centres, spread=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c, (n, mu) in enumerate(zip(counts, centres)):
        xs.append(torch.tensor(mu) + spread * torch.randn(n, len(mu), generator=g))
        ys.append(torch.full((n, ), c))
    return torch.cat(xs).float(), torch.cat(ys)


CENTRES = [[4, 0, 0, 1], [0, 4, 0, 1], [0, 0, 4, 1], [3, 0, 0, 3]]  # t0 near h0


def test_balanced_probe_recovers_a_rare_class_the_plain_fit_drowns():
    x, y = _blobs([800, 800, 200, 6], CENTRES, spread=1.0)
    tx, ty = _blobs([50, 50, 50, 50], CENTRES, spread=1.0, seed=1)
    probe = bd.balanced_probe(x, y, 4)
    f1 = bd.group_f1(probe(tx).argmax(1), ty, CLASSES, GROUPS)
    assert f1['tail_f1'] > 60
    # deterministic: the same fit twice
    assert torch.equal(probe.weight, bd.balanced_probe(x, y, 4).weight)
    # against an unweighted logistic regression on the same data
    plain = torch.nn.Linear(4, 4)
    opt = torch.optim.LBFGS(plain.parameters(), max_iter=200, line_search_fn='strong_wolfe')

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(plain(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    plain_f1 = bd.group_f1(plain(tx).argmax(1), ty, CLASSES, GROUPS)
    assert f1['tail_f1'] > plain_f1['tail_f1'] + 10


def test_sibling_distance_and_nearest_head_centroid():
    x, y = _blobs([50, 50, 50, 50], CENTRES, spread=0.1)
    near = bd.sibling_distance(x, y, CLASSES, {'t0': 'h0'})['t0']
    far = bd.sibling_distance(x, y, CLASSES, {'t0': 'm0'})['t0']
    assert 0 <= near < far
    collapsed = x.clone()
    collapsed[y == 3] = x[y == 0][:50]
    assert bd.sibling_distance(collapsed, y, CLASSES, {'t0': 'h0'})['t0'] == \
        pytest.approx(0, abs=1e-6)
    # tail instances sitting on the head centroid are counted, separated ones are not
    assert bd.nearest_centroid_head_share(x, y, collapsed, y, CLASSES, GROUPS) > 0.4
    assert bd.nearest_centroid_head_share(x, y, x, y, CLASSES, GROUPS) == 0


def test_head_cluster_share():
    x, y = _blobs([300, 300, 100, 30], CENTRES, spread=0.2)
    assert bd.head_cluster_share(x, y, CLASSES, GROUPS, k=4) == pytest.approx(0, abs=0.05)
    merged = x.clone()
    merged[y == 3] = x[y == 0][:30] + 0.01
    assert bd.head_cluster_share(merged, y, CLASSES, GROUPS, k=4) == pytest.approx(1)


def test_calibration_sibling_margins_sign_follows_the_center():
    from mmdeblora.deblora.calibration import calibrate
    x, y = _blobs([60, 60, 60, 30], CENTRES, spread=0.5)
    alphas = torch.tensor([0., 0., 0., 0.5])
    own = bd.class_centroids(x, y, 4)
    for center, closer in ((own[0], 'sibling'), (2 * own[3] - own[0], 'own')):
        centers = own.clone()
        centers[3] = center  # h_t0 on the sibling's centroid, or beyond its own
        z_hat = calibrate(x, y, centers, alphas)
        res = bd.calibration_sibling_margins(x, z_hat, y, centers, CLASSES, {'t0': 'h0'})
        r = res['t0']
        assert r['sibling'] == 'h0' and r['margin_before'] > 0
        if closer == 'sibling':
            assert r['center_to_sibling'] < r['center_to_own']
            assert r['margin_after'] < r['margin_before']
            assert r['own_nearer_after'] <= r['own_nearer_before']
        else:
            assert r['center_to_own'] < r['center_to_sibling']
            assert r['margin_after'] > r['margin_before']
    # classes without an instance are left out; uncalibrated classes keep their margin
    res = bd.calibration_sibling_margins(x, x, y, own, CLASSES, {'t0': 'h0', 'm0': 'h1'})
    assert res['m0']['margin_after'] == pytest.approx(res['m0']['margin_before'])
    y2 = y.clone()
    y2[y2 == 3] = 2
    assert 't0' not in bd.calibration_sibling_margins(x, x, y2, own, CLASSES, {'t0': 'h0'})


def test_tail_spread_grows_with_the_scatter_and_ignores_a_shared_offset():
    tight, y = _blobs([60, 60, 60, 30], CENTRES, spread=0.2)
    wide, _ = _blobs([60, 60, 60, 30], CENTRES, spread=0.2)
    wide[y == 3] = tight[y == 3].mean(0) + 4 * (tight[y == 3] - tight[y == 3].mean(0))
    a, b = bd.tail_spread(tight, y, CLASSES, GROUPS), bd.tail_spread(wide, y, CLASSES, GROUPS)
    assert set(a) == {'t0'} and b['t0'] > 2 * a['t0']
    # centred on the split's mean: a vector every feature shares does not shrink it (the
    # uncentred cosine of feature_stats' intra_tail would)
    assert bd.tail_spread(tight + 50, y, CLASSES, GROUPS)['t0'] == pytest.approx(a['t0'],
                                                                                 rel=1e-4)
    assert bd.tail_spread(tight, torch.where(y == 3, 2, y), CLASSES, GROUPS) == {}


def test_center_estimates_against_the_training_mean():
    import torch.nn.functional as F
    held, hy = _blobs([40, 40, 40, 40], CENTRES, spread=0.1, seed=1)
    train, ty = _blobs([200, 200, 100, 10], CENTRES, spread=0.1)
    train[ty == 3] = 0.5 * train[ty == 3] + 0.5 * train[ty == 0][:10]  # atypical: toward h0
    held, train = F.normalize(held, dim=1), F.normalize(train, dim=1)
    own_held = bd.class_centroids(held, hy, 4)[3]
    mean = bd.class_centroids(train, ty, 4)
    for h_t0, nearest, better in ((own_held, 't0', True),        # the class as held out
                                  (mean[0], 'h0', False),         # the sibling's center
                                  (mean[3], None, None)):         # its own training mean
        centers = mean.clone()
        centers[3] = h_t0
        r = bd.center_estimates(centers, train, ty, held, hy, CLASSES, ['t0', 'm0'])['t0']
        assert r['mean_to_heldout'] > 0
        if nearest is not None:
            assert r['nearest'] == nearest and r['own_nearest'] == (nearest == 't0')
            assert (r['ratio'] < 1) == better
        else:
            assert r['ratio'] == pytest.approx(1, rel=1e-4)
    # a class without held-out instances is left out
    res = bd.center_estimates(mean, train, ty, held[hy != 2], hy[hy != 2], CLASSES,
                              ['t0', 'm0'])
    assert set(res) == {'t0'}
