"""Cost of the de-biasing step, and our K-means against sklearn's.

1. Toy data: time of one stage-1 training epoch of configs/deblora/oriented_rcnn_r18_
   deblora_toy.py, and of feature extraction, K-means and calibration on the same model
   and training set, printed as fractions of the epoch.
2. K-means on N x D Gaussian blobs (default 100k x 256, K = 32): ours vs
   sklearn.cluster.KMeans with the same n_init / max_iter / tol, over ``--seeds`` data
   seeds: time ratio and inertia ratio per seed and their mean (ours / sklearn; < 1 is
   better for both).

    python benchmarks/bench_debias.py [--data-root DIR] [--n 100000] [--dim 256]
"""
import argparse
import os.path as osp
import tempfile
import time

import numpy as np
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def toy_fractions(data_root: str, work_dir: str) -> None:
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmdeblora.deblora import calibrate, kmeans
    from mmdeblora.engine import DebiasSettings, build_extraction_loader, extract_features
    from mmdeblora.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'deblora',
                                   'oriented_rcnn_r18_deblora_toy.py'))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = data_root + '/'
        cfg[key].num_workers, cfg[key].persistent_workers = 0, False
    cfg.train_cfg.max_epochs, cfg.train_cfg.val_interval = 1, 100
    cfg.default_hooks.checkpoint.interval = 100
    cfg.model.backbone.pretrained = None  # random weights: no toy foundation needed for a time
    opts = {k: v for k, v in cfg.custom_hooks[0].items() if k in DebiasSettings.keys()}
    settings = DebiasSettings(**opts)
    cfg.custom_hooks = []
    cfg.work_dir, cfg.experiment_name = work_dir, 'bench_debias'
    runner = Runner.from_cfg(cfg)
    t0 = time.perf_counter()
    runner.train()
    epoch = time.perf_counter() - t0
    model = runner.model
    loader = build_extraction_loader(cfg, settings)
    t0 = time.perf_counter()
    z, y = extract_features(model, loader, pool=settings.pool,
                            normalize=settings.normalize, progress=False)
    t_ext = time.perf_counter() - t0
    t0 = time.perf_counter()
    km = kmeans(z, settings.num_clusters, **settings.kmeans)
    t_km = time.perf_counter() - t0
    t0 = time.perf_counter()
    h = torch.randn(int(y.max()) + 1, z.shape[1])
    calibrate(z, y, h, torch.full((h.shape[0],), 0.5), renormalize=True)
    t_cal = time.perf_counter() - t0
    print(f'toy: {len(runner.train_dataloader.dataset)} images, {len(y)} instances, '
          f'feature dim {z.shape[1]}, K={km.centers.shape[0]}')
    print(f'toy: one training epoch {epoch:.1f} s')
    for name, t in (('extraction', t_ext), ('kmeans', t_km), ('calibration', t_cal)):
        print(f'toy: {name:<12s} {t:8.3f} s = {t / epoch:.4f} of an epoch')
    total = t_ext + t_km + t_cal
    print(f'toy: de-biasing total {total:.2f} s = {total / epoch:.4f} of an epoch')


def kmeans_vs_sklearn(n: int, dim: int, k: int, n_init: int, seed: int = 0) -> tuple:
    """One data seed: (time ratio, inertia ratio) of ours over sklearn."""
    from sklearn.cluster import KMeans

    from mmdeblora.deblora import kmeans
    rng = np.random.RandomState(seed)
    mu = rng.randn(k, dim).astype(np.float32) * 2
    x = mu[rng.randint(k, size=n)] + rng.randn(n, dim).astype(np.float32)
    t0 = time.perf_counter()
    ref = KMeans(k, n_init=n_init, max_iter=100, tol=1e-4, random_state=seed).fit(x)
    t_sk = time.perf_counter() - t0
    xt = torch.from_numpy(x)
    t0 = time.perf_counter()
    ours = kmeans(xt, k, n_init=n_init, max_iter=100, tol=1e-4, seed=seed)
    t_ours = time.perf_counter() - t0
    ratios = (t_ours / t_sk, ours.inertia / ref.inertia_)
    print(f'kmeans seed {seed}: {n} x {dim}, K={k}, n_init={n_init}, '
          f'threads={torch.get_num_threads()}: sklearn {t_sk:.2f} s inertia '
          f'{ref.inertia_:.6g}; ours {t_ours:.2f} s inertia {ours.inertia:.6g}; time ratio '
          f'{ratios[0]:.3f}, inertia ratio {ratios[1]:.5f}')
    if torch.cuda.is_available():
        xg = xt.cuda()
        kmeans(xg, k, n_init=1, max_iter=2)  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        g = kmeans(xg, k, n_init=n_init, max_iter=100, tol=1e-4, seed=seed)
        torch.cuda.synchronize()
        t_g = time.perf_counter() - t0
        print(f'kmeans seed {seed}: ours on {torch.cuda.get_device_name()} {t_g:.3f} s, '
              f'time ratio gpu/sklearn {t_g / t_sk:.4f}, inertia ratio '
              f'{g.inertia / ref.inertia_:.5f}')
    return ratios


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data-root', help='toy DOTA root (generated in a temp dir if absent)')
    p.add_argument('--n', type=int, default=100_000)
    p.add_argument('--dim', type=int, default=256)
    p.add_argument('--k', type=int, default=32)
    p.add_argument('--n-init', type=int, default=3)
    p.add_argument('--seeds', type=int, default=3, help='data seeds of the K-means comparison')
    p.add_argument('--skip-toy', action='store_true')
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_toy:
            root = args.data_root
            if root is None:
                from mmdeblora.datasets.toy_dota import make_toy_dota
                root = osp.join(tmp, 'toy')
                make_toy_dota(root, seed=0, log=None)
            toy_fractions(root.rstrip('/'), osp.join(tmp, 'work'))
    ratios = np.array([kmeans_vs_sklearn(args.n, args.dim, args.k, args.n_init, seed)
                       for seed in range(args.seeds)])
    mean, sd = ratios.mean(0), ratios.std(0, ddof=1) if len(ratios) > 1 else (0, 0)
    print(f'kmeans over {len(ratios)} seeds: time ratio ours/sklearn {mean[0]:.3f} '
          f'(sd {sd[0]:.3f}), inertia ratio {mean[1]:.5f} (sd {sd[1]:.5f})')


if __name__ == '__main__':
    main()
