"""Head-tail / tail-tail / intra-tail cosine distances on a hand-made geometry."""
import math

import pytest
import torch

from mmdeblora.deblora import cap_per_class, feature_stats


def test_feature_stats_hand_computed():
    # head class h along x, tail classes t1 along y and t2 at 45 degrees between x and y.
    s = 1 / math.sqrt(2)
    z = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0], [s, s], [1.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    st = feature_stats(z, y, ['h', 't1', 't2', 'x'], dict(head=['h'], tail=['t1', 't2', 'x']))
    # head-tail: (1 - 0) for t1 and (1 - cos45) for t2
    assert st['head_tail'] == pytest.approx((1 + (1 - s)) / 2)
    assert st['tail_tail'] == pytest.approx(1 - s)
    assert st['intra_tail'] == pytest.approx(0.0, abs=1e-9)  # x has no instance: skipped


def test_cap_per_class_is_seeded():
    y = torch.tensor([0] * 50 + [1] * 3)
    a, b = cap_per_class(y, 10, seed=1), cap_per_class(y, 10, seed=1)
    assert torch.equal(a, b)
    assert (y[a] == 0).sum() == 10 and (y[a] == 1).sum() == 3
    assert not torch.equal(a, cap_per_class(y, 10, seed=2))
    assert cap_per_class(y, None).numel() == 53
