"""tools/debias.py on a stage-1 checkpoint of the toy debLoRA config."""
import csv
import json
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config

from tests.conftest import REPO, run_tool, toy_options

CFG = osp.join(REPO, 'configs', 'deblora', 'oriented_rcnn_r18_deblora_toy.py')


def test_debias_report(toy_root, tmp_path):
    from mmrotate.registry import MODELS

    from mmdeblora.utils.launch import register_all
    register_all()
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(CFG).model)
    model.init_weights()
    ckpt = str(tmp_path / 'stage1.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    out = tmp_path / 'report'
    run_tool('debias.py', CFG, ckpt, '--out', str(out), '--embedding', 'pca',
             '--work-dir', str(tmp_path),
             *toy_options(toy_root, ['train_dataloader.dataset.indices=6']))
    for name in ('counts.csv', 'centers.npy', 'class_centers.npy', 'alphas.csv',
                 'deblora_state.json', 'deblora_state.npz', 'stats.json',
                 'embedding.png'):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / 'counts.csv')))
    n = sum(int(r['size']) for r in rows)
    assert n > 0 and len(rows) <= 32
    alphas = {r['class']: (int(r['instances']), float(r['alpha']))
              for r in csv.DictReader(open(out / 'alphas.csv'))}
    assert sum(c for c, _ in alphas.values()) == n
    assert alphas['ship'][1] == 0  # head: not calibrated
    tail = [a for k, (c, a) in alphas.items() if k in ('helicopter', 'roundabout') and c]
    assert all(a == 0.5 for a in tail)
    stats = json.load(open(out / 'stats.json'))
    assert set(stats['before']) == {'head_tail', 'tail_tail', 'intra_tail'}
    assert np.load(out / 'class_centers.npy').shape == (15, 128)


def test_embed_2d_tsne_and_pca():
    import importlib.util
    import sys
    sys.path.insert(0, osp.join(REPO, 'tools'))
    spec = importlib.util.spec_from_file_location('debias_tool',
                                                  osp.join(REPO, 'tools', 'debias.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x = np.random.RandomState(0).randn(40, 8).astype(np.float32)
    pts, name = mod.embed_2d(x, 'pca')
    assert pts.shape == (40, 2) and name == 'PCA'
    pts, name = mod.embed_2d(x, 'auto')
    assert pts.shape == (40, 2) and name in ('t-SNE', 'PCA')
