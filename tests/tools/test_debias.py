"""tools/debias.py on a checkpoint of the toy debLoRA config: the same public step as the
hook, the report files, and the natural-count alphas."""
import csv
import json
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config

from mmdeblora.visualization import embed_2d
from tests.conftest import REPO, run_tool, toy_options

CFG = osp.join(REPO, 'configs', 'deblora', 'oriented_rcnn_r18_deblora_toy.py')


def test_debias_report(toy_root, tmp_path):
    from mmrotate.registry import MODELS

    from mmdeblora.utils.launch import register_all
    register_all()
    torch.manual_seed(0)
    cfg = Config.fromfile(CFG)
    cfg.model.backbone.pretrained = None  # as toy_options sets it: no toy foundation needed
    model = MODELS.build(cfg.model)
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
    alphas = {r['class']: r for r in csv.DictReader(open(out / 'alphas.csv'))}
    assert sum(int(r['clustered_instances']) for r in alphas.values()) == n
    assert float(alphas['ship']['alpha']) == 0  # head: not calibrated
    # imbalance alphas (the default): rarer calibrated classes get more, up to alpha_max
    natural = {k: int(r['natural_instances']) for k, r in alphas.items()}
    tail = {k: float(r['alpha']) for k, r in alphas.items()
            if int(r['calibrated'])}
    assert tail and max(tail.values()) <= 0.5
    rarest = min(tail, key=lambda k: natural[k])
    commonest = max(tail, key=lambda k: natural[k])
    assert tail[rarest] >= tail[commonest]
    stats = json.load(open(out / 'stats.json'))
    assert set(stats['before']) == {'head_tail', 'tail_tail', 'intra_tail'}
    assert np.load(out / 'class_centers.npy').shape == (15, 128)
    state = json.load(open(out / 'deblora_state.json'))
    # only classes with training instances are listed as calibrated
    assert set(state['calibrated']) == {k for k in tail}
    assert all(natural[k] > 0 for k in state['calibrated'])

    # the stage-2 probe on that state: the same stage 2 as the hook, the loss parts logged
    probe = tmp_path / 'probe.csv'
    args = (CFG, ckpt, str(out), '--iters', '3', '--loss-weight', '0.5', '--out',
            str(probe), '--work-dir', str(tmp_path),
            *toy_options(toy_root, ['train_dataloader.dataset.indices=6']))
    run_tool('analysis/stage2_probe.py', *args)
    rows = list(csv.DictReader(open(probe)))
    assert [int(r['iter']) for r in rows] == [0, 1, 2]
    first = rows[0]
    # the new adapter starts at zero: no drift of the uncalibrated instances, and the
    # weighted feature loss is lambda x the calibrated gap (its scale-relative mean)
    assert float(first['other_gap']) == 0
    if int(first['calibrated']):
        assert abs(float(first['feat_loss']) - 0.5 * float(first['cal_gap'])) < 1e-4
    assert float(first['grad_task']) > 0
    # never written over
    again = run_tool('analysis/stage2_probe.py', *args, check=False)
    assert again.returncode != 0 and 'exists' in again.stderr
    assert len(list(csv.DictReader(open(probe)))) == 3


def test_embed_2d_tsne_and_pca():
    x = np.random.RandomState(0).randn(40, 8).astype(np.float32)
    pts, name = embed_2d(x, 'pca')
    assert pts.shape == (40, 2) and name == 'PCA'
    # PCA: the first axis carries the most variance
    assert pts[:, 0].var() >= pts[:, 1].var()
    pts, name = embed_2d(x, 'tsne')
    assert pts.shape == (40, 2) and name == 't-SNE'
