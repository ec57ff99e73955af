"""Our chunked torch K-means against sklearn, edge cases, and the DDP gather path."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from mmdeblora.deblora import assign, kmeans


def blobs(n=3000, d=16, centers=12, seed=0):
    rng = np.random.RandomState(seed)
    mu = rng.randn(centers, d) * 6
    lab = rng.randint(centers, size=n)
    return (mu[lab] + rng.randn(n, d)).astype(np.float32)


def test_inertia_within_one_percent_of_sklearn():
    sk = pytest.importorskip('sklearn.cluster')
    x = blobs()
    ref = sk.KMeans(12, n_init=3, random_state=0).fit(x)
    ours = kmeans(torch.from_numpy(x), 12, n_init=3, seed=0, chunk_size=500)
    assert ours.centers.shape == (12, 16)
    assert ours.inertia <= ref.inertia_ * 1.01
    # the reported inertia and labels match a fresh assignment to the returned centers
    lab, d = assign(torch.from_numpy(x), ours.centers)
    assert torch.equal(lab, ours.labels)
    assert abs(float(d.sum()) - ours.inertia) <= 1e-4 * ours.inertia


def test_seeded_and_chunk_independent():
    x = torch.from_numpy(blobs(n=800, d=8, centers=5))
    a = kmeans(x, 5, seed=3, chunk_size=64)
    b = kmeans(x, 5, seed=3, chunk_size=10000)
    assert torch.allclose(a.centers, b.centers, atol=1e-5)
    assert torch.equal(a.labels, b.labels)


def test_fewer_points_than_k_and_duplicates():
    x = torch.randn(5, 4)
    res = kmeans(x, 32, n_init=2)
    assert res.centers.shape == (5, 4) and res.inertia == pytest.approx(0, abs=1e-5)
    dup = torch.ones(40, 3)  # 40 points, one distinct value
    res = kmeans(dup, 4)
    assert torch.isfinite(res.centers).all() and res.inertia == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match='no features'):
        kmeans(torch.zeros(0, 3), 4)


def test_non_finite_features_are_named():
    x = torch.randn(50, 4)
    x[7, 2] = float('nan')
    x[31, 0] = float('inf')
    with pytest.raises(ValueError, match=r'2 of 50 feature rows with NaN or inf.*\[7, 31\]'):
        kmeans(x, 4)


def test_features_whose_distances_overflow_are_named():
    # finite features of a diverged run: their squared distances overflow float32
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 4, generator=gen) * 1e20
    with pytest.raises(ValueError, match=r'squared distances .* overflow torch.float32') as err:
        kmeans(x, 4)
    assert 'diverged' in str(err.value) and 'multinomial' not in str(err.value)
    x = torch.randn(200, 4, generator=gen) * 5e17   # each square fits, their sum does not
    with pytest.raises(ValueError, match='overflow'):
        kmeans(x, 4)
    res = kmeans(x.double(), 4)                     # float64 holds them
    assert torch.isfinite(res.centers).all() and res.labels.shape == (200,)


def _worker(rank: int, world: int, port: int, x: torch.Tensor, out: str) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    tdist.init_process_group('gloo', rank=rank, world_size=world)
    from mmdeblora.engine.debias import gather_cat

    # unequal shards, as a sampler without padding gives
    cut = 700
    local = x[:cut] if rank == 0 else x[cut:]
    res = kmeans(gather_cat(local), 6, n_init=2, seed=1)
    torch.save(res.centers, f'{out}/centers{rank}.pt')
    tdist.destroy_process_group()


def test_ddp_gather_gives_same_centers_as_one_process(tmp_path):
    x = torch.from_numpy(blobs(n=1500, d=8, centers=6, seed=2))
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, x, str(tmp_path)), nprocs=2, join=True)
    single = kmeans(x, 6, n_init=2, seed=1).centers
    for r in range(2):
        got = torch.load(tmp_path / f'centers{r}.pt', weights_only=True)
        assert torch.allclose(got, single, atol=1e-5)
