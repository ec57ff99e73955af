"""SMOTE in feature space: points on segments to same-class neighbours; the head's loss."""
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import mmdeblora  # noqa: F401
from mmdeblora.models.heads import SMOTEClsHead, smote_features
from mmdeblora.models.heads.class_feature_bank import ClassFeatureBank

DEFAULT_SCOPE = 'mmpretrain'  # set around each test by tests/conftest.py


def test_smote_points_lie_on_segments_to_k_nearest_neighbours():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 4, generator=g)
    k = 3
    pts, i, j, u = smote_features(x, 200, k=k, generator=g)
    assert pts.shape == (200, 4) and ((u >= 0) & (u <= 1)).all()
    # brute force neighbours, independent of the implementation
    dist = ((x[:, None] - x[None]) ** 2).sum(-1)
    for s, a, b in zip(pts, i.tolist(), j.tolist()):
        order = [n for n in dist[a].argsort().tolist() if n != a][:k]
        assert b in order and b != a
        # s lies on the segment [x_a, x_b]: distance to it is ~0
        d = x[b] - x[a]
        t = ((s - x[a]) @ d / (d @ d)).clamp(0, 1)
        assert torch.linalg.norm(s - (x[a] + t * d)) < 1e-5
    assert len(set(i.tolist())) > 5  # bases drawn from many samples
    with pytest.raises(ValueError, match='at least 2'):
        smote_features(x[:1], 3)
    _, _, j2, _ = smote_features(x[:2], 5, k=5)  # k clipped to m - 1
    assert set(j2.tolist()) <= {0, 1}


def test_bank_is_a_ring_buffer_per_class():
    bank = ClassFeatureBank(num_classes=2, dim=1, size=4)
    bank.update(torch.arange(6.)[:, None], torch.tensor([0, 0, 0, 0, 0, 1]))
    assert bank.filled.tolist() == [4, 1]
    assert sorted(bank.class_features(0).flatten().tolist()) == [1., 2., 3., 4.]
    bank.update(torch.tensor([[10.]]), torch.tensor([0]))  # replaces the oldest (1.)
    assert sorted(bank.class_features(0).flatten().tolist()) == [2., 3., 4., 10.]
    means, valid = bank.class_means()
    assert means[:, 0].tolist() == [4.75, 5.0] and valid.tolist() == [True, True]


def head(counts=(40, 10, 2)):
    torch.manual_seed(0)
    h = MODELS.build(dict(type='SMOTEClsHead', num_classes=3, in_channels=4,
                          class_counts=list(counts), k_neighbors=2, bank_size=8))
    h.init_weights()
    return h


def samples(labels):
    return [DataSample().set_gt_label(int(y)) for y in labels]


def test_plan_balances_in_expectation_and_waits_for_the_bank():
    h = head()
    assert h.synthetic_plan(16).sum() == 0  # nothing in the bank yet
    h.bank.update(torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2]))
    plans = torch.stack([h.synthetic_plan(16) for _ in range(2000)]).float()
    # deficits (0, 30, 38) over 52 samples: 16 * 68 / 52 per batch, split 30 : 38
    assert plans.sum(1).mean().item() == pytest.approx(16 * 68 / 52, rel=0.03)
    assert plans[:, 0].sum() == 0
    assert (plans[:, 2].sum() / plans[:, 1].sum()).item() == pytest.approx(38 / 30, rel=0.1)
    h.bank.filled[2] = 1  # one sample cannot be interpolated
    assert all(h.synthetic_plan(16)[2] == 0 for _ in range(20))


def test_loss_real_part_is_the_lora_rows_and_synthetic_trains_the_head_only():
    h = head()
    h.bank.update(torch.randn(8, 4), torch.tensor([1, 1, 1, 2, 2, 2, 0, 0]))
    x = torch.randn(5, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 0, 2])
    torch.manual_seed(1)
    losses = h.loss((x, ), samples(labels))
    assert losses['num_synthetic'].item() > 0
    real = F.cross_entropy(h.fc(x), labels, reduction='sum') / 5
    assert losses['loss'].item() > real.item()  # synthetic terms added, same 1/B weight
    gx, = torch.autograd.grad(losses['loss'], x, retain_graph=True)
    gx_real, = torch.autograd.grad(real, x)
    assert torch.allclose(gx, gx_real, atol=1e-6)  # synthetic features carry no gradient
    h.fc.weight.grad = None
    losses['loss'].backward()
    assert h.fc.weight.grad.abs().sum() > 0


def test_balanced_counts_add_nothing_and_auto_needs_the_hook():
    h = head(counts=(5, 5, 5))
    h.bank.update(torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2]))
    x, labels = torch.randn(4, 4), torch.tensor([0, 1, 2, 0])
    losses = h.loss((x, ), samples(labels))
    assert losses['num_synthetic'].item() == 0
    assert losses['loss'].item() == pytest.approx(
        F.cross_entropy(h.fc(x), labels).item(), rel=1e-6)
    auto = SMOTEClsHead(num_classes=3, in_channels=4)
    with pytest.raises(RuntimeError, match='ClassStatsHook'):
        auto.loss((x, ), samples(labels))


def test_unique_bank_keeps_one_latest_entry_per_sample():
    """The default ring keeps repeated views of a small class's samples; ``unique`` keeps
    each sample once, its latest view, and rings over distinct samples of a large class."""
    ring, uniq = ClassFeatureBank(2, 1, size=4), ClassFeatureBank(2, 1, size=4, unique=True)
    for epoch in range(3):  # class 0: samples 7 and 9, seen once per epoch
        feats = torch.tensor([[10. * epoch + 7], [10. * epoch + 9]])
        ring.update(feats, torch.tensor([0, 0]))
        uniq.update(feats, torch.tensor([0, 0]), torch.tensor([7, 9]))
    assert sorted(ring.class_features(0).flatten().tolist()) == [17., 19., 27., 29.]
    assert sorted(uniq.class_features(0).flatten().tolist()) == [27., 29.]
    assert sorted(uniq.ids[0, :2].tolist()) == [7, 9]
    # a class with more distinct samples than slots: the oldest distinct sample goes
    uniq.update(torch.arange(6.)[:, None], torch.ones(6).long(), torch.arange(100, 106))
    assert sorted(uniq.ids[1].tolist()) == [102, 103, 104, 105]
    uniq.update(torch.tensor([[50.]]), torch.tensor([1]), torch.tensor([104]))  # refresh
    assert sorted(uniq.class_features(1).flatten().tolist()) == [2., 3., 5., 50.]
    with pytest.raises(ValueError, match='sample index'):
        uniq.update(torch.zeros(1, 1), torch.tensor([0]))


def test_unique_samples_head_interpolates_between_distinct_samples():
    torch.manual_seed(0)
    h = MODELS.build(dict(type='SMOTEClsHead', num_classes=3, in_channels=4,
                          class_counts=[40, 10, 3], k_neighbors=2, bank_size=8,
                          unique_samples=True))
    tail = torch.randn(3, 4)  # the 3 samples of class 2
    for epoch in range(4):  # each seen again, a slightly other view
        x = torch.cat([tail + 0.01 * epoch, torch.randn(2, 4)])
        data = [DataSample(metainfo=dict(sample_idx=i)).set_gt_label(y)
                for i, y in zip([20, 21, 22, 0, 1], [2, 2, 2, 0, 0])]
        h.loss((x, ), data)
    bank = h.bank.class_features(2)
    assert bank.shape[0] == 3  # one entry per sample (a ring would hold 8 views)
    assert torch.allclose(bank.sort(0).values, (tail + 0.03).sort(0).values)
    _, i, j, _ = smote_features(bank, 100, k=2)
    assert (i != j).all() and sorted(h.bank.ids[2, :3].tolist()) == [20, 21, 22]
    with pytest.raises(KeyError, match='sample_idx'):
        h.loss((x, ), samples([2, 2, 2, 0, 0]))
