"""Offline de-biasing on a stage-1 checkpoint: ``python tools/debias.py CONFIG CHECKPOINT``.

Runs the method's steps 1-4 (features, K-means, de-biased centers, alphas) exactly as
DebLoRAHook does at the stage switch (the hook's settings come from the config's
``custom_hooks``; defaults when it has none) and writes a report to ``--out``
(default ``<work_dir>/debias_report``): ``counts.csv`` (cluster x class), ``centers.npy``
(mu_k), ``class_centers.npy`` (h_c), ``alphas.csv``, ``deblora_state.json/npz``,
``stats.json`` (head-tail / tail-tail / intra-tail before and after calibration) and
``embedding.png`` (t-SNE, or PCA without sklearn, of the instance features coloured by
group, before and after calibration).
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmdeblora.utils.launch import (add_common_args, build_runner,  # noqa: E402
                                    load_config, register_all)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='debLoRA steps 1-4 on a checkpoint')
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='stage-1 checkpoint (LoRA detector)')
    parser.add_argument('--out', help='report folder (default <work_dir>/debias_report)')
    parser.add_argument('--max-points', type=int, default=2000,
                        help='instances shown in the embedding plot (seeded sample)')
    parser.add_argument('--embedding', choices=['auto', 'tsne', 'pca'], default='auto',
                        help='auto: t-SNE when sklearn is installed, else PCA')
    add_common_args(parser)
    return parser.parse_args()


def embed_2d(x: np.ndarray, method: str, seed: int = 0) -> tuple:
    """2-D embedding of the rows of x; returns (points, name of the method used)."""
    if method in ('auto', 'tsne'):
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            if method == 'tsne':
                raise
        else:
            perp = float(min(30, max(2, (len(x) - 1) // 3)))
            return TSNE(2, perplexity=perp, init='pca', random_state=seed).fit_transform(
                x), 't-SNE'
    xc = torch.from_numpy(x - x.mean(0)).double()
    _, _, v = torch.linalg.svd(xc, full_matrices=False)
    return (xc @ v[:2].T).numpy(), 'PCA'


def plot(before, after, groups_of, method, path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    colors = dict(head='tab:blue', middle='tab:green', tail='tab:red', other='tab:gray')
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True)
    for ax, pts, title in ((axes[0], before, 'before calibration'),
                           (axes[1], after, 'after calibration')):
        for g, c in colors.items():
            m = groups_of == g
            if m.any():
                ax.scatter(pts[m, 0], pts[m, 1], s=4, c=c, label=f'{g} ({m.sum()})',
                           alpha=0.6)
        ax.set_title(f'{method}, {title}')
    axes[0].legend(markerscale=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    register_all()
    cfg = load_config(args)
    from mmdeblora.engine.hooks import DebLoRAHook
    from mmdeblora.engine.hooks.deblora_hook import write_counts_csv
    hooks = [h for h in cfg.get('custom_hooks', []) if h.get('type') == 'DebLoRAHook']
    hook_cfg = dict(hooks[0]) if hooks else dict(switch_epoch=0)
    hook_cfg.pop('type')
    hook = DebLoRAHook(**hook_cfg)
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', [])
                        if h.get('type') != 'DebLoRAHook']
    cfg.load_from, cfg.resume = None, False
    runner = build_runner(cfg)
    ckpt = runner.load_checkpoint(args.checkpoint)
    if (ckpt.get('deblora') or {}).get('stage', 1) == 2:
        runner.logger.warning('stage-2 checkpoint: its deblora adapter is not loaded, '
                              'the stage-1 model (adapter default) is analysed')

    state, z, z_hat, y, groups = hook.compute_state(runner)
    out = args.out or osp.join(cfg.work_dir, 'debias_report')
    os.makedirs(out, exist_ok=True)
    state.save(out)
    write_counts_csv(state, osp.join(out, 'counts.csv'))
    np.save(osp.join(out, 'centers.npy'), state.centers.numpy())
    np.save(osp.join(out, 'class_centers.npy'), state.class_centers.numpy())
    with open(osp.join(out, 'alphas.csv'), 'w') as f:
        f.write('class,instances,calibrated,alpha\n')
        for n, c, k, a in zip(state.class_names, state.class_counts.tolist(),
                              state.calibrated.tolist(), state.alphas.tolist()):
            f.write(f'{n},{c},{int(k)},{a:.6f}\n')
    with open(osp.join(out, 'stats.json'), 'w') as f:
        json.dump(dict(state.stats, groups=groups), f, indent=2)

    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(y), generator=gen)[:args.max_points]
    ys = y[idx]
    both, method = embed_2d(torch.cat([z[idx], z_hat[idx]]).numpy(), args.embedding)
    group_of_class = {c: g for g, names in groups.items() for c in names}
    labels = np.array([group_of_class.get(state.class_names[i], 'other')
                       for i in ys.tolist()])
    plot(both[:len(ys)], both[len(ys):], labels, method, osp.join(out, 'embedding.png'))
    runner.logger.info(f'debias report written to {out}')
    print(out)


if __name__ == '__main__':
    main()
