"""DROLTLoss against the official code's formulas, on hand-sized cases."""
import math

import pytest
import torch

import mmdeblora  # noqa: F401
from mmdeblora.models.losses import DROLTLoss


def test_two_points_on_their_centroids():
    # z0 = mu0 = (0, 0), z1 = mu1 = (3, 4): distances 0 (positives) and 5 (negatives).
    # Row mu0 over the batch: [-0 - eps, -5] -> log-softmax of the positive is
    # -log(1 + exp(-(5 - eps))); the same for mu1; loss = mean over the 2 batch classes.
    feats = torch.tensor([[0., 0.], [3., 4.]])
    labels = torch.tensor([0, 1])
    for eps, want in ((1.0, math.log1p(math.exp(-4))), (0.0, math.log1p(math.exp(-5)))):
        loss = DROLTLoss(num_classes=2, epsilon=eps)
        assert loss(feats, labels, feats.clone()).item() == pytest.approx(want, rel=1e-5)


def reference(feats, labels, cents, valid, eps, t, t_base):
    """The official loss written with loops: each centroid's softmax over the batch."""
    rows = [c for c in range(len(cents)) if valid[c]]
    classes = sorted(set(labels))
    total = 0.0
    for c in rows:
        a = [-math.dist(cents[c], z) - (eps[y] if y == c else 0.0)
             for z, y in zip(feats, labels)]
        lse = math.log(sum(math.exp(v / t) for v in a))
        if c in classes:
            own = [a[i] / t - lse for i, y in enumerate(labels) if y == c]
            total += -(t / t_base) * sum(own) / len(own)
    return total / len(classes)


def test_matches_loop_reference_unsorted_batch_and_missing_centroid():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(7, 3, generator=g)
    labels = torch.tensor([2, 0, 2, 1, 0, 2, 1])  # not sorted by class
    cents = torch.randn(4, 3, generator=g)
    valid = torch.tensor([True, True, True, False])  # class 3: no centroid, not in batch
    loss = DROLTLoss(num_classes=4, temperature=0.5, base_temperature=0.25, epsilon=0.0)
    with torch.no_grad():
        loss.epsilon.copy_(torch.tensor([0.3, 0.7, 1.1, 2.0]))  # differ per class
    want = reference(feats.tolist(), labels.tolist(), cents.tolist(), valid.tolist(),
                     loss.epsilon.tolist(), 0.5, 0.25)
    assert loss(feats, labels, cents, valid).item() == pytest.approx(want, rel=1e-5)


def test_learned_epsilon_gradient_and_fixed_option():
    feats = torch.tensor([[0., 0.], [1., 0.], [3., 4.]])
    labels = torch.tensor([0, 0, 1])
    loss = DROLTLoss(num_classes=2)
    assert isinstance(loss.epsilon, torch.nn.Parameter)
    loss(feats, labels, torch.tensor([[0.5, 0.], [3., 4.]])).backward()
    assert (loss.epsilon.grad > 0).all()  # a larger margin is a harder loss
    fixed = DROLTLoss(num_classes=2, learn_epsilon=False)
    assert not isinstance(fixed.epsilon, torch.nn.Parameter)
    with pytest.raises(ValueError, match='centroids'):
        fixed(feats, labels, torch.zeros(3, 2))
