"""Show the bias before claiming a fix: a classifier's features against the oracle's.

``python tools/analysis/bias_diagnostics.py CONFIG CHECKPOINT --oracle-checkpoint CKPT``
``python tools/analysis/bias_diagnostics.py --aggregate RUN1.json RUN2.json ...`` (mean, sd)
``python tools/analysis/bias_diagnostics.py CONFIG STAGE1_CKPT --deblora-state DIR`` (where
the switch's calibration moves each tail class: toward its sibling or away from it)

Both models' features (the pooled vector the linear head reads) are extracted on the
long-tailed training crops of CONFIG and on its evaluation split (``--split val`` to choose
an operating point, ``test`` to report). Printed and written as json (``--out``):

1. tail macro-F1 of each model's own classifier (pre-check: model <= oracle - 15);
2. tail macro-F1 of a class-balanced linear probe fitted on each model's features of the
   same training crops (pre-check: model <= oracle - 10; if the probe closes the gap, the
   bias is in the classifier, not the representation);
3. mean tail-to-sibling centroid cosine distance (pre-check: model <= oracle / 2);
4. share of tail instances whose nearest class centroid is a head class;
5. share of tail training instances in head-majority K-means clusters (K = ``--k``);
6. the paper's feature table on the evaluation split: head-tail and tail-tail centroid
   distances, tail intra-class distance (``mmdeblora.deblora.stats.feature_stats``).

CHECKPOINT may be a stage-2 debLoRA checkpoint (CONFIG its debLoRA config): the model
enters stage 2 from the state stored in it, as ``tools/test.py`` does, so the numbers
after stage 2 sit beside LoRA's.

With ``--deblora-state`` (a debLoRA run's ``<work_dir>/deblora``, CHECKPOINT its
``stage1_final.pth``) no oracle is needed: the tool extracts the training features the
switch clustered (its own extraction loader and ``extract_features``, checked against the
statistics the switch logged), calibrates them with the saved h_c and alpha_c, and
reports per tail class the distance of h_c to the class's centroid and to its sibling's,
and the sibling margin before and after calibration (``calibration_sibling_margins``).

Siblings come from the benchmark's ``target.json`` beside the data; without one, each
tail class is paired with the head / middle class nearest to it in the oracle's features.
"""
import argparse
import json
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope

from mmdeblora.utils import register_all_modules
from mmdeblora.utils.atomic import atomic_open
from mmdeblora.utils.launch import quiet_known_upstream_warnings

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ORACLE_CFG = osp.join(REPO, 'configs', 'classification', 'bias_lora_oracle.py')


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', nargs='?',
                   help='config of the model under study (e.g. bias_lora.py)')
    p.add_argument('checkpoint', nargs='?')
    p.add_argument('--oracle-config', default=ORACLE_CFG)
    p.add_argument('--oracle-checkpoint')
    p.add_argument('--aggregate', nargs='+', metavar='JSON',
                   help='summarise earlier --out files (seeds): mean and sd of each number')
    p.add_argument('--split', choices=['val', 'test'], default='test')
    p.add_argument('--k', type=int, default=32, help='K-means clusters (number 5)')
    p.add_argument('--seed', type=int, default=0, help='K-means seed')
    p.add_argument('--deblora-state', metavar='DIR',
                   help="a debLoRA run's <work_dir>/deblora: report where its calibration "
                   'moves each tail class (CHECKPOINT: the stage1_final.pth beside it)')
    p.add_argument('--out', help='write the numbers to this json file')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='overrides applied to both configs (e.g. data_root)')
    return p.parse_args()


def load_cfg(path: str, options) -> Config:
    if not osp.isfile(path):
        raise FileNotFoundError(f'config {path!r} does not exist')
    cfg = Config.fromfile(path)
    if options:
        cfg.merge_from_dict(options)
    return cfg


def load_model(cfg: Config, checkpoint: str):
    """The config's model with the checkpoint (a stage-2 one in its stage 2), eval mode."""
    from mmdeblora.engine.stage2 import load_debias_model
    return load_debias_model(cfg, checkpoint).eval()


def build_split(cfg: Config, loader: str):
    """The data set of ``loader`` with the test pipeline (no augmentation)."""
    from mmpretrain.registry import DATASETS
    ds_cfg = cfg[loader].dataset.copy()
    ds_cfg.pipeline = cfg.test_dataloader.dataset.pipeline
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')):
        return DATASETS.build(ds_cfg)


@torch.no_grad()
def extract(model, dataset, batch_size: int = 256):
    """Pooled features, labels and the model's own predictions."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         collate_fn=pseudo_collate)
    xs, ys, preds = [], [], []
    for data in loader:
        data = model.data_preprocessor(data, False)
        feats = model.extract_feat(data['inputs'], stage='neck')
        xs.append(feats[-1].flatten(1).float())
        preds.append(model.head(feats).argmax(1))
        ys.append(torch.cat([s.gt_label for s in data['data_samples']]))
    return torch.cat(xs), torch.cat(ys), torch.cat(preds)


def siblings_for(cfg: Config, classes, groups, oracle_eval) -> dict:
    meta = osp.join(cfg.train_dataloader.dataset.data_root, 'target.json')
    if osp.isfile(meta):
        with open(meta) as fh:
            sib = json.load(fh).get('siblings')
        if sib:
            return {t: s for t, s in sib.items() if t in classes and s in classes}
    from mmdeblora.evaluation.bias_diagnostics import class_centroids
    x, y = oracle_eval[:2]
    cent = torch.nn.functional.normalize(class_centroids(x - x.mean(0), y, len(classes)), dim=1)
    others = [classes.index(c) for c in groups['head'] + groups['middle']]
    return {t: classes[others[int((cent[others] @ cent[classes.index(t)]).argmax())]]
            for t in groups['tail']}


def diagnose(model_cfg: Config, model, oracle, split: str, k: int, seed: int) -> dict:
    from mmdeblora.deblora.stats import feature_stats
    from mmdeblora.evaluation import bias_diagnostics as bd
    train_set = build_split(model_cfg, 'train_dataloader')
    eval_set = build_split(model_cfg, f'{split}_dataloader')
    classes = list(eval_set.metainfo['classes'])
    groups = train_set.metainfo['groups']
    feats = {name: dict(train=extract(m, train_set), eval=extract(m, eval_set))
             for name, m in (('model', model), ('oracle', oracle))}
    siblings = siblings_for(model_cfg, classes, groups, feats['oracle']['eval'])
    out = dict(split=split, classes=classes, groups=groups, siblings=siblings)
    for name, f in feats.items():
        (tx, ty, _), (ex, ey, epred) = f['train'], f['eval']
        probe = bd.balanced_probe(tx, ty, len(classes))
        dist = bd.sibling_distance(ex, ey, classes, siblings)
        out[name] = dict(
            own=bd.group_f1(epred, ey, classes, groups),
            probe=bd.group_f1(probe(ex).argmax(1), ey, classes, groups),
            sibling_distance=sum(dist.values()) / len(dist),
            sibling_distance_per_class=dist,
            nearest_centroid_head_share=bd.nearest_centroid_head_share(
                tx, ty, ex, ey, classes, groups),
            distances=feature_stats(torch.nn.functional.normalize(ex, dim=1), ey, classes,
                                    groups),
            head_cluster_share=bd.head_cluster_share(tx, ty, classes, groups, k, seed))
    m, o = out['model'], out['oracle']
    out['prechecks'] = {
        '1_tail_f1_gap': o['own']['tail_f1'] - m['own']['tail_f1'],
        '2_probe_tail_f1_gap': o['probe']['tail_f1'] - m['probe']['tail_f1'],
        '3_sibling_distance_ratio': m['sibling_distance'] / max(o['sibling_distance'], 1e-12),
    }
    p = out['prechecks']
    out['passed'] = {'1': p['1_tail_f1_gap'] >= 15, '2': p['2_probe_tail_f1_gap'] >= 10,
                     '3': p['3_sibling_distance_ratio'] <= 0.5}
    return out


def format_report(res: dict) -> str:
    m, o = res['model'], res['oracle']
    rows = [f"bias diagnostics on the {res['split']} split (model vs balanced-data oracle)",
            f"{'':<44}{'model':>10}{'oracle':>10}"]

    def row(label, a, b, fmt='{:>10.2f}'):
        rows.append(f'{label:<44}' + fmt.format(a) + fmt.format(b))

    for g in ('head', 'middle', 'tail'):
        row(f'own classifier {g} macro-F1', m['own'][f'{g}_f1'], o['own'][f'{g}_f1'])
    for g in ('head', 'middle', 'tail'):
        row(f'balanced probe {g} macro-F1', m['probe'][f'{g}_f1'], o['probe'][f'{g}_f1'])
    row('tail-sibling centroid cosine distance', m['sibling_distance'],
        o['sibling_distance'], '{:>10.4f}')
    row('tail nearest centroid is head (share)', m['nearest_centroid_head_share'],
        o['nearest_centroid_head_share'], '{:>10.3f}')
    row('tail train in head-majority clusters', m['head_cluster_share'],
        o['head_cluster_share'], '{:>10.3f}')
    for key, label in DISTANCES:
        row(label, m['distances'][key], o['distances'][key], '{:>10.4f}')
    p, ok = res['prechecks'], res['passed']
    rows.append(f"pre-check 1 (tail F1 gap >= 15): {p['1_tail_f1_gap']:.2f} "
                f"{'PASS' if ok['1'] else 'fail'}")
    rows.append(f"pre-check 2 (probe tail F1 gap >= 10): {p['2_probe_tail_f1_gap']:.2f} "
                f"{'PASS' if ok['2'] else 'fail'}")
    rows.append(f"pre-check 3 (sibling distance ratio <= 0.5): "
                f"{p['3_sibling_distance_ratio']:.3f} {'PASS' if ok['3'] else 'fail'}")
    return '\n'.join(rows)


NUMBERS = [('own classifier tail macro-F1', ('own', 'tail_f1')),
           ('own classifier head macro-F1', ('own', 'head_f1')),
           ('balanced probe tail macro-F1', ('probe', 'tail_f1')),
           ('balanced probe head macro-F1', ('probe', 'head_f1')),
           ('tail-sibling centroid cosine distance', ('sibling_distance', )),
           ('tail nearest centroid is head (share)', ('nearest_centroid_head_share', )),
           ('tail train in head-majority clusters', ('head_cluster_share', ))]
# the paper's feature table (cosine distances of class centroids, evaluation split)
DISTANCES = [('head_tail', 'head-tail inter-class distance'),
             ('tail_tail', 'tail-tail inter-class distance'),
             ('intra_tail', 'tail intra-class distance')]
NUMBERS += [(label, ('distances', key)) for key, label in DISTANCES]


def mean_sd(values, fmt: str = '{:8.3f} +- {:6.3f}') -> str:
    """Mean and sample sd (NaN for one value) of a list of numbers, formatted."""
    from mmdeblora.utils.summary import fmt_mean_sd
    return fmt_mean_sd(values, fmt)


def aggregate(runs) -> str:
    """Mean and sample sd over runs (loaded --out files) of every number and pre-check."""
    rows = [f'{len(runs)} runs, split {sorted({r["split"] for r in runs})}',
            f"{'':<40}{'model':>20}{'oracle':>20}"]
    for label, keys in NUMBERS:
        vals = {}
        for side in ('model', 'oracle'):
            vals[side] = []
            for r in runs:
                v = r[side]
                for k in keys:
                    v = v.get(k, float('nan')) if isinstance(v, dict) else v
                vals[side].append(v)
        rows.append(f'{label:<40}{mean_sd(vals["model"]):>20}{mean_sd(vals["oracle"]):>20}')
    for key in runs[0]['prechecks']:
        passed = sum(r['passed'][key[0]] for r in runs)
        rows.append(f"pre-check {key:<34}{mean_sd([r['prechecks'][key] for r in runs]):>20}"
                    f'   passed in {passed}/{len(runs)}')
    return '\n'.join(rows)


def calibration_report(cfg: Config, model, state_dir: str) -> dict:
    from mmdeblora.deblora.calibration import calibrate
    from mmdeblora.deblora.state import DebiasState
    from mmdeblora.deblora.stats import feature_stats
    from mmdeblora.engine import build_extraction_loader, extract_features
    from mmdeblora.engine.stage2 import settings_from_config
    from mmdeblora.evaluation import bias_diagnostics as bd
    if not hasattr(model, 'instance_features'):
        raise TypeError(f'{type(model).__name__} has no instance_features: --deblora-state '
                        'needs the debLoRA config of the run (e.g. bias_lora_deblora.py)')
    state = DebiasState.load(state_dir)
    settings, _ = settings_from_config(cfg)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')):
        loader = build_extraction_loader(cfg, settings)  # the switch's own extraction
    classes = list(loader.dataset.metainfo['classes'])
    if classes != list(state.class_names):
        raise ValueError(f'{state_dir}: the state was fitted on classes {state.class_names}, '
                         f'the config has {classes}')
    z, y = extract_features(model, loader, pool=state.pool, normalize=state.normalize,
                            progress=False)
    groups = dict(state.groups)
    logged = dict(state.stats).get('before', {})
    again = feature_stats(z, y, classes, groups)
    same = bool(logged) and all(abs(again[k] - logged[k]) < 1e-4 for k in logged)
    z_hat = calibrate(z, y, state.class_centers, state.alphas, state.renormalize)
    siblings = siblings_for(cfg, classes, groups, (z, y))
    per_class = bd.calibration_sibling_margins(z, z_hat, y, state.class_centers, classes,
                                               siblings)
    for name, r in per_class.items():
        r['alpha'] = float(state.alphas[classes.index(name)])
    calibrated = [n for n in state.calibrated_names if n in per_class]
    summary = {k: sum(per_class[n][k] for n in calibrated) / max(len(calibrated), 1)
               for k in ('center_to_own', 'center_to_sibling', 'margin_before',
                         'margin_after', 'own_nearer_before', 'own_nearer_after')}
    summary['centers_nearer_sibling'] = sum(
        per_class[n]['center_to_sibling'] < per_class[n]['center_to_own'] for n in calibrated)
    summary['calibrated_classes'] = len(calibrated)
    return dict(kind='calibration', classes=classes, siblings=siblings,
                features_match_switch=same, per_class=per_class, summary=summary)


def format_calibration(res: dict) -> str:
    rows = ['calibration against the sibling (training features of the switch; margin = '
            'cos to own centroid - cos to sibling centroid)',
            f"{'tail class':<20}{'sibling':<16}{'alpha':>6}{'h-own':>8}{'h-sib':>8}"
            f"{'margin before':>15}{'after':>8}{'own nearer before':>19}{'after':>8}"]
    for name, r in res['per_class'].items():
        rows.append(f"{name:<20}{r['sibling']:<16}{r['alpha']:>6.2f}"
                    f"{r['center_to_own']:>8.4f}{r['center_to_sibling']:>8.4f}"
                    f"{r['margin_before']:>15.4f}{r['margin_after']:>8.4f}"
                    f"{r['own_nearer_before']:>19.3f}{r['own_nearer_after']:>8.3f}")
    s = res['summary']
    rows.append(f"calibrated classes whose h_c is nearer the sibling than their own centroid: "
                f"{s['centers_nearer_sibling']} of {s['calibrated_classes']}")
    rows.append(f"mean margin {s['margin_before']:.4f} -> {s['margin_after']:.4f}; own "
                f"centroid nearer {s['own_nearer_before']:.3f} -> {s['own_nearer_after']:.3f}")
    rows.append('features equal those the switch clustered (its logged statistics): '
                + ('yes' if res['features_match_switch'] else
                   'NO: another checkpoint, config or data than the run used'))
    return '\n'.join(rows)


def aggregate_calibration(runs) -> str:
    def stat(values):
        return mean_sd(values, '{:.4f} +- {:.4f}')

    def change(rs, key):
        before, after = [r[key + '_before'] for r in rs], [r[key + '_after'] for r in rs]
        return f'{stat(before)} -> {stat(after)}'

    rows = [f'{len(runs)} runs (calibration against the sibling), mean +- sd']
    for name in runs[0]['per_class']:
        rs = [r['per_class'][name] for r in runs if name in r['per_class']]
        nearer = sum(r['center_to_sibling'] < r['center_to_own'] for r in rs)
        rows.append(f"{name:<20} h nearer sibling in {nearer}/{len(rs)}; margin "
                    f"{change(rs, 'margin')}; own nearer {change(rs, 'own_nearer')}")
    s = [r['summary'] for r in runs]
    rows.append(f"all calibrated: h nearer sibling {stat([x['centers_nearer_sibling'] for x in s])}"
                f" of {s[0]['calibrated_classes']}; margin {change(s, 'margin')}; own nearer "
                f"{change(s, 'own_nearer')}")
    return '\n'.join(rows)


def main() -> None:
    args = parse_args()
    quiet_known_upstream_warnings()  # and init_weights' line per parameter
    if args.aggregate:
        runs = []
        for path in args.aggregate:
            with open(path) as fh:
                runs.append(json.load(fh))
        kinds = {r.get('kind', 'prechecks') for r in runs}
        if len(kinds) > 1:
            raise SystemExit(f'--aggregate: the files mix kinds {sorted(kinds)}')
        print(aggregate_calibration(runs) if kinds == {'calibration'} else aggregate(runs))
        return
    if args.deblora_state:
        if not (args.config and args.checkpoint):
            raise SystemExit('--deblora-state needs CONFIG and CHECKPOINT (stage1_final.pth)')
        for path in (args.checkpoint, osp.join(args.deblora_state, 'deblora_state.json')):
            if not osp.isfile(path):
                raise FileNotFoundError(f'{path!r} does not exist')
        register_all_modules()
        cfg = load_cfg(args.config, args.cfg_options)
        res = calibration_report(cfg, load_model(cfg, args.checkpoint), args.deblora_state)
        res.update(config=args.config, checkpoint=args.checkpoint,
                   deblora_state=args.deblora_state)
        print(format_calibration(res))
        if args.out:
            with atomic_open(args.out) as fh:
                json.dump(res, fh, indent=2)
        return
    if not (args.config and args.checkpoint and args.oracle_checkpoint):
        raise SystemExit('need CONFIG, CHECKPOINT and --oracle-checkpoint (or --aggregate)')
    register_all_modules()
    cfg = load_cfg(args.config, args.cfg_options)
    oracle_cfg = load_cfg(args.oracle_config, args.cfg_options)
    for path in (args.checkpoint, args.oracle_checkpoint):
        if not osp.isfile(path):
            raise FileNotFoundError(f'checkpoint {path!r} does not exist')
    res = diagnose(cfg, load_model(cfg, args.checkpoint),
                   load_model(oracle_cfg, args.oracle_checkpoint), args.split, args.k,
                   args.seed)
    res.update(config=args.config, checkpoint=args.checkpoint,
               oracle_config=args.oracle_config, oracle_checkpoint=args.oracle_checkpoint)
    print(format_report(res))
    if args.out:
        with atomic_open(args.out) as fh:
            json.dump(res, fh, indent=2)


if __name__ == '__main__':
    main()
