"""Generate the bias benchmark and pretrain its foundation.

``.venv/bin/python tools/data/make_bias_benchmark.py [OUT] [--bias strong --cue-strength 0.05 ...]``
(docs/classification.md)

1. the balanced source domain (``OUT/source``), 2. the long-tailed target domain
(``OUT/target``), 3. the foundation: ``configs/classification/bias_foundation.py`` trained
on the source by mmengine's runner, its backbone saved as ``OUT/foundation.pth``.
Each step is skipped when its output holds the same fingerprint (settings, generator
version, recipe), and refused without ``--force`` when it holds another one.
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import time

import torch

from mmdeblora.datasets.bias_benchmark import (SOURCE_DEFAULTS, TARGET_DEFAULTS, make_bias_source,
                                               make_bias_target)
from mmdeblora.datasets.bias_benchmark.target import BIASES, CUE_DEFAULTS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FOUNDATION_CFG = osp.join(REPO, 'configs', 'classification', 'bias_foundation.py')


def foundation_fingerprint(source_fp: str, cfg_text: str, seed: int) -> str:
    blob = json.dumps(dict(source=source_fp, cfg=cfg_text, seed=seed), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrain_foundation(out: str, source: dict, seed: int, force: bool,
                        epochs: int = 0) -> dict:
    """Train the foundation on ``OUT/source`` unless ``OUT/foundation.pth`` is current."""
    from mmengine.config import Config

    from mmdeblora.utils import register_all_modules
    from mmdeblora.utils.launch import build_runner
    register_all_modules()
    cfg = Config.fromfile(FOUNDATION_CFG)
    cfg.randomness = dict(seed=seed, deterministic=False)
    if epochs:  # shorter pretraining (tests); part of the fingerprint like any setting
        cfg.train_cfg.max_epochs = epochs
    # the recipe and the source's own fingerprint, not where the folder lies
    fp = foundation_fingerprint(source['fingerprint'], cfg.pretty_text, seed)
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.data_root = osp.join(out, 'source')
    cfg.test_dataloader = cfg.val_dataloader
    ckpt, meta_path = osp.join(out, 'foundation.pth'), osp.join(out, 'foundation.json')
    if osp.lexists(ckpt):
        try:
            with open(meta_path) as fh:
                meta = json.load(fh)
            held = meta.get('fingerprint')
        except (OSError, ValueError, AttributeError):  # absent, cut, not a JSON object
            meta, held = None, None
        if held == fp:
            print(f'foundation up to date: {ckpt} ({fp})')
            return meta
        if held is None and not force:
            raise FileExistsError(
                f'{ckpt} is not a foundation this tool finished: {meta_path} is missing or '
                'unreadable (another file, or an interrupted run). Choose another output '
                'folder (the default is data/bias_benchmark), move the file away, or pass '
                '--force to replace it')
        if not force:
            raise FileExistsError(f'{ckpt} was trained with other settings ({meta_path}); '
                                  'pass --force to retrain it')
    cfg.work_dir = osp.join(out, 'foundation_work')
    cfg.train_cfg.val_begin = cfg.train_cfg.max_epochs + 1  # one val, below
    start = time.time()
    runner = build_runner(cfg)
    runner.train()
    metrics = runner.val()
    state = {k: v.detach().cpu().clone() for k, v in runner.model.state_dict().items()
             if k.startswith('backbone.')}
    from mmdeblora.utils.summary import state_dict_fingerprint
    meta = dict(fingerprint=fp, source=source['fingerprint'], seed=seed,
                weights=state_dict_fingerprint(state),
                source_val_accuracy=float(metrics['accuracy/top1']),
                train_seconds=round(time.time() - start, 1))
    tmp = ckpt + '.tmp'
    torch.save(dict(state_dict=state, meta=meta), tmp)
    os.replace(tmp, ckpt)
    with open(meta_path, 'w') as fh:
        json.dump(meta, fh, indent=2)
    print(f"foundation: source val accuracy {meta['source_val_accuracy']:.1f} %, "
          f"{meta['train_seconds']} s -> {ckpt}")
    return meta


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('out', nargs='?', default='data/bias_benchmark', help='output folder')
    p.add_argument('--seed', type=int, default=0, help='target domain seed')
    p.add_argument('--source-seed', type=int, default=SOURCE_DEFAULTS['seed'])
    p.add_argument('--foundation-seed', type=int, default=0)
    p.add_argument('--bias', choices=BIASES, default=TARGET_DEFAULTS['bias'],
                   help='the bias dial: which cue tells each tail class from its sibling '
                   '(scattered / atypical / shared_attribute: how its instances vary; '
                   'docs/classification.md)')
    p.add_argument('--cue-strength', type=float,
                   help='stripe contrast (shared / strong), ring radius (weak), the share of '
                   'the looks\' ranges (scattered / atypical), the share of tail training '
                   'instances without the shared attribute (shared_attribute); default '
                   f"{TARGET_DEFAULTS['cue_strength']}, "
                   + ', '.join(f'{v} for {k}' for k, v in CUE_DEFAULTS.items()))
    p.add_argument('--stripe-period', type=float,
                   default=TARGET_DEFAULTS['stripe_period'], help='in scene pixels')
    p.add_argument('--noise', type=float, default=TARGET_DEFAULTS['noise'],
                   help='sensor noise std (grey levels) over the target scenes')
    p.add_argument('--max-count', type=int, default=TARGET_DEFAULTS['max_count'])
    p.add_argument('--imbalance-ratio', type=float,
                   default=TARGET_DEFAULTS['imbalance_ratio'])
    p.add_argument('--val-per-class', type=int, default=TARGET_DEFAULTS['val_per_class'])
    p.add_argument('--test-per-class', type=int, default=TARGET_DEFAULTS['test_per_class'])
    p.add_argument('--source-per-class', type=int, default=SOURCE_DEFAULTS['per_class'])
    p.add_argument('--foundation-epochs', type=int, default=0,
                   help="pretraining epochs (default: the foundation config's)")
    p.add_argument('--no-foundation', action='store_true',
                   help='generate the data only (no pretraining)')
    p.add_argument('--force', action='store_true',
                   help='replace outputs that hold other settings')
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    source = make_bias_source(a.out, force=a.force, seed=a.source_seed,
                              per_class=a.source_per_class)
    cue = {} if a.cue_strength is None else dict(cue_strength=a.cue_strength)
    make_bias_target(a.out, force=a.force, seed=a.seed, bias=a.bias, **cue,
                     stripe_period=a.stripe_period, noise=a.noise,
                     max_count=a.max_count, imbalance_ratio=a.imbalance_ratio,
                     val_per_class=a.val_per_class, test_per_class=a.test_per_class)
    if not a.no_foundation:
        pretrain_foundation(a.out, source, a.foundation_seed, a.force, a.foundation_epochs)


if __name__ == '__main__':
    main()
