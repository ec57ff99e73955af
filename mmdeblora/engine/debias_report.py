"""What the de-biasing step reports: log tables, scalars, warnings, files and a plot.

Shared by ``DebLoRAHook`` (at the switch) and ``tools/debias.py`` (offline).
"""
import json
import os
import os.path as osp
from typing import Callable, Dict, List, Optional

import numpy as np

from mmdeblora.deblora import DebiasState
from mmdeblora.utils.atomic import atomic_open
from .debias import DebiasResult

LogFn = Callable[[str], None]


def counts_table(state: DebiasState) -> str:
    """n_kc with class names as rows and the non-empty clusters as columns."""
    keep = (state.cluster_sizes > 0).nonzero().flatten().tolist()
    width = max(len(n) for n in state.class_names) + 2
    header = ' ' * width + ' '.join(f'k{k:<4d}' for k in keep)
    rows = [f'{name:<{width}}' + ' '.join(f'{int(state.counts[k, c]):<5d}' for k in keep)
            for c, name in enumerate(state.class_names)]
    return '\n'.join([header] + rows)


def write_counts_csv(state: DebiasState, path: str) -> None:
    """The cluster x class count matrix with class names as the header (and the
    unlabelled ``cluster_pool`` instances per cluster when there was a pool)."""
    pool = state.unlabelled_counts
    with atomic_open(path) as f:
        f.write('cluster,size,' + ','.join(state.class_names) +
                (',unlabelled' if pool is not None else '') + '\n')
        for k, (size, row) in enumerate(zip(state.cluster_sizes.tolist(),
                                            state.counts.tolist())):
            f.write(f'{k},{size},' + ','.join(map(str, row)) +
                    (f',{int(pool[k])}' if pool is not None else '') + '\n')


def degenerate_warnings(state: DebiasState) -> List[str]:
    """Signs that the clustering cannot carry the method."""
    out = []
    sizes = state.cluster_sizes
    k = int(sizes.numel())
    singles = int((sizes == 1).sum())
    if k > 1 and singles > k / 2:
        out.append(f'{singles} of {k} clusters hold a single instance: too few instances '
                   'for num_clusters, the centers are the instances themselves')
    home: Dict[int, List[str]] = {}
    for c, name in enumerate(state.class_names):
        col = state.counts[:, c]
        if state.calibrated[c] and col.sum() > 0:
            home.setdefault(int(col.argmax()), []).append(name)
    for cluster, names in sorted(home.items()):
        if len(names) > 1:
            out.append(f'calibrated classes {names} mostly fall in the same cluster {cluster}: '
                       'their de-biased centers will nearly coincide')
    natural = state.natural_counts
    for c, name in enumerate(state.class_names):
        if state.calibrated[c] and state.counts[:, c].sum() == 0:
            out.append(f'calibrated class {name!r} has {int(natural[c])} training '
                       'instances but none in the clustered set (max_per_class?)')
    return out


def result_scalars(result: DebiasResult) -> Dict[str, float]:
    """Numbers for mmengine's visualizer backends (scalars.json, TensorBoard, ...)."""
    st = result.state
    sizes = st.cluster_sizes[st.cluster_sizes > 0].double()
    out = {'deblora/inertia': float(st.inertia), 'deblora/loss_scale': float(st.loss_scale),
           'deblora/clusters_nonempty': float(sizes.numel()),
           'deblora/cluster_size_min': float(sizes.min()),
           'deblora/cluster_size_median': float(sizes.median()),
           'deblora/cluster_size_max': float(sizes.max()),
           'deblora/instances': float(st.counts.sum())}
    for name, a, cal in zip(st.class_names, st.alphas.tolist(), st.calibrated.tolist()):
        if cal:
            out[f'deblora/alpha/{name}'] = float(a)
    for when, stats in st.stats.items():
        for key, v in stats.items():
            out[f'deblora/{when}/{key}'] = float(v)
    return out


def log_result(result: DebiasResult, log: LogFn, warn: Optional[LogFn] = None) -> None:
    st = result.state
    log(f'debias: K-means inertia {st.inertia:.6g}, cluster sizes '
        f'{st.cluster_sizes.tolist()}')
    log('debias: cluster x class counts n_kc (rows: classes, columns: non-empty '
        'clusters)\n' + counts_table(st))
    log(f'debias: groups {result.groups}; calibrated {st.calibrated_names}')
    log('debias: alpha per calibrated class ' + ', '.join(
        f'{n}={a:.3f}' for n, a, c in zip(st.class_names, st.alphas.tolist(),
                                          st.calibrated.tolist()) if c))
    log(f'debias: feature-loss scale (mean gap of a calibrated training instance) '
        f'{st.loss_scale:.6g}')
    for when, stats in st.stats.items():
        log(f'debias: feature stats {when} calibration: ' +
            ', '.join(f'{k}={v:.4f}' for k, v in stats.items()))
    for msg in degenerate_warnings(st):
        (warn or log)(f'debias: WARNING {msg}')


def save_result(result: DebiasResult, out_dir: str, plot: Optional[str] = 'pca',
                max_points: int = 3000, seed: int = 0) -> List[str]:
    """Write the state, tables and the embedding plot to ``out_dir``; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    st = result.state
    st.save(out_dir)
    paths = [osp.join(out_dir, 'deblora_state.json'), osp.join(out_dir, 'deblora_state.npz')]
    write_counts_csv(st, osp.join(out_dir, 'counts.csv'))
    with atomic_open(osp.join(out_dir, 'alphas.csv')) as f:
        f.write('class,natural_instances,clustered_instances,calibrated,alpha\n')
        for n, m, c, k, a in zip(st.class_names, st.natural_counts.tolist(),
                                 st.class_counts.tolist(), st.calibrated.tolist(),
                                 st.alphas.tolist()):
            f.write(f'{n},{m},{c},{int(k)},{a:.6f}\n')
    with atomic_open(osp.join(out_dir, 'stats.json')) as f:
        json.dump(dict(st.stats, groups=result.groups), f, indent=2)
    paths += [osp.join(out_dir, n) for n in ('counts.csv', 'alphas.csv', 'stats.json')]
    if plot:
        from mmdeblora.visualization import plot_embedding
        path = osp.join(out_dir, 'embedding.png')
        plot_embedding(result.z.numpy(), result.labels.numpy(), st.class_names,
                       result.groups, path, centers=st.centers.numpy(),
                       class_centers=st.class_centers.numpy(),
                       calibrated=st.calibrated.tolist(), z_hat=result.z_hat.numpy(),
                       method=plot, max_points=max_points, seed=seed)
        paths.append(path)
    for name, arr in (('centers.npy', st.centers), ('class_centers.npy', st.class_centers)):
        with atomic_open(osp.join(out_dir, name), 'wb') as f:
            np.save(f, arr.numpy())
    return paths + [osp.join(out_dir, 'centers.npy'), osp.join(out_dir, 'class_centers.npy')]
