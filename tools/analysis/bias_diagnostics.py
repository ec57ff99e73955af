"""Show the bias before claiming a fix: a model's features against the oracle's.

``python tools/analysis/bias_diagnostics.py CONFIG CHECKPOINT --oracle-checkpoint CKPT``
``python tools/analysis/bias_diagnostics.py --aggregate RUN1.json RUN2.json ...`` (mean, sd)
``python tools/analysis/bias_diagnostics.py CONFIG STAGE1_CKPT --deblora-state DIR`` (where
the switch's calibration moves each tail class: toward its sibling or away from it)

Classification (configs/classification/): both models' features (the pooled vector the
linear head reads) are extracted on the long-tailed training crops of CONFIG and on its
evaluation split (``--split val`` to choose an operating point, ``test`` to report).
Printed and written as json (``--out``):

1. tail macro-F1 of each model's own classifier (pre-check: model <= oracle - 15);
2. tail macro-F1 of a class-balanced linear probe fitted on each model's features of the
   same training crops (pre-check: model <= oracle - 10; if the probe closes the gap, the
   bias is in the classifier, not the representation);
3. mean tail-to-sibling centroid cosine distance (pre-check: model <= oracle / 2);
4. share of tail instances whose nearest class centroid is a head class;
5. share of tail training instances in head-majority K-means clusters (K = ``--k``);
6. the paper's feature table on the evaluation split: head-tail and tail-tail centroid
   distances, tail intra-class distance (``mmdeblora.deblora.stats.feature_stats``).

Pre-checks of debLoRA's premise (``premise`` in the json, per model; the math in
``mmdeblora.evaluation.bias_diagnostics``), for the settings where it can hold
(``--bias scattered`` / ``atypical``, docs/classification.md):

a. tail intra-class spread on the evaluation split (``tail_spread``: mean cosine distance
   of an instance to its class centroid, features centred on the split's mean), model /
   oracle (pre-check for ``scattered``: >= 1.5, the model's tail scattered);
b. the de-biased centers h_c the switch would build from the model's training features:
   the switch's own steps (``mmdeblora.engine.debias.fit_on_features``: L2 normalisation,
   K-means, ``balanced`` weighting) with the config's DebLoRAHook settings, the defaults
   (``configs/_base_/deblora_hook.py``: K = 32) for a LoRA config, recorded as
   ``switch_settings``; per calibrated (tail) class, whether h_c is nearer the class's
   evaluation centroid than any other class's (pre-check: all tail classes but at most
   one, 5 of 6);
c. the premise in its sharpest form, per tail class: d(h_c, evaluation centroid) /
   d(mean of the class's training features, evaluation centroid), cosine distances in the
   switch's (normalised) space, per class and their mean (pre-check: mean < 1, h_c the
   better estimate of the class as held out).

With ``--cluster-pool`` (or a config whose DebLoRAHook has ``cluster_pool``), b and c
fit K-means on the training features plus the unlabelled pool's, as the switch does.

b and c are computed for the oracle too (its h_c from its features of the same training
crops), for comparison; the pre-checks read the model's.

Detection (a config whose model has a ``roi_head``, e.g. configs/bias_detection/; the
default oracle is then ``bias_det_lora_oracle.py``): an instance is a ground-truth box of
the training scenes / of the evaluation split's scenes, loaded with the test pipeline (the
de-biasing switch's own extraction loader, ``mmdeblora.engine.debias``). Its feature is
``instance_features(..., pool='avg', normalize=False)``: the bbox head's input for the GT
box (the rotated RoI extractor's map on the neck's levels) average-pooled, i.e. exactly
what the switch clusters, before the switch's L2 normalisation (numbers 5 and 6 normalise
as the switch does). A plain-LoRA config's ``mmdet.FasterRCNN`` / ``mmdet.CascadeRCNN`` is
built as ``DebLoRAFasterRCNN`` / ``DebLoRACascadeRCNN`` (same state-dict keys) for this.

1. informative only: macro-F1 of the detector's RoI classifier on the GT RoIs (the
   (last) bbox head's class scores on those RoI maps, the background column left out of
   the argmax). It ignores proposals, regression and NMS, so the real pre-check 1 for
   detection is the tail mAP gap of the detection table, not this number;
2. the representation pre-check: a class-balanced linear probe on each model's GT RoI
   features of the training scenes, tail macro-F1 on the evaluation split's GT boxes
   (pre-check: model <= oracle - 10);
3.-6. as for classification, on the GT RoI features. The json also holds the number of
   GT boxes per class extracted on each split (``instances``).

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
import copy
import json
import os.path as osp
from typing import Dict, Optional, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope
from torch import Tensor

from mmdeblora.utils import register_all_modules
from mmdeblora.utils.atomic import atomic_open
from mmdeblora.utils.launch import quiet_known_upstream_warnings

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ORACLE_CFG = osp.join(REPO, 'configs', 'classification', 'bias_lora_oracle.py')
DET_ORACLE_CFG = osp.join(REPO, 'configs', 'bias_detection', 'bias_det_lora_oracle.py')
# plain two-stage detectors and their de-biasing subclasses (same state-dict keys)
DEBIAS_DETECTORS = {'FasterRCNN': 'DebLoRAFasterRCNN', 'CascadeRCNN': 'DebLoRACascadeRCNN'}
DET_FEATURES = ('GT-box RoI features: the bbox head input (RoI extractor map) avg-pooled, '
                'not normalised (what the debLoRA switch clusters)')


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', nargs='?',
                   help='config of the model under study (e.g. bias_lora.py)')
    p.add_argument('checkpoint', nargs='?')
    p.add_argument('--oracle-config',
                   help=f'default: {osp.relpath(ORACLE_CFG, REPO)} for a classifier, '
                   f'{osp.relpath(DET_ORACLE_CFG, REPO)} for a detector')
    p.add_argument('--oracle-checkpoint')
    p.add_argument('--aggregate', nargs='+', metavar='JSON',
                   help='summarise earlier --out files (seeds): mean and sd of each number')
    p.add_argument('--split', choices=['val', 'test'], default='test')
    p.add_argument('--k', type=int, default=32, help='K-means clusters (number 5)')
    p.add_argument('--seed', type=int, default=0, help='K-means seed')
    p.add_argument('--deblora-state', metavar='DIR',
                   help="a debLoRA run's <work_dir>/deblora: report where its calibration "
                   'moves each tail class (CHECKPOINT: the stage1_final.pth beside it)')
    p.add_argument('--cluster-pool', type=json.loads, metavar='JSON',
                   help='premise b / c with an unlabelled cluster pool, as '
                   'DebLoRAHook.cluster_pool (dataset options merged into the training '
                   'dataset config), e.g. \'{"folders": {"train": "train_balanced", '
                   '"val": "val", "test": "test"}}\'; default: the config\'s')
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


def is_detection(cfg: Config) -> bool:
    """A two-stage detector config (its instances are GT boxes), else a classifier."""
    return 'roi_head' in cfg.model


def as_debias_detector(cfg: Config) -> Config:
    """A copy of a detector config whose model has ``instance_features``: a plain
    ``FasterRCNN`` / ``CascadeRCNN`` becomes its debLoRA subclass (same weights)."""
    name = str(cfg.model.type).split('.')[-1]
    if name in DEBIAS_DETECTORS.values():
        return cfg
    if name not in DEBIAS_DETECTORS:
        raise ValueError(f'model.type={cfg.model.type!r}: the detection diagnostics need a '
                         f'two-stage detector of {sorted(DEBIAS_DETECTORS)} or their debLoRA '
                         f'subclasses {sorted(DEBIAS_DETECTORS.values())}')
    cfg = copy.deepcopy(cfg)
    cfg.model.type = DEBIAS_DETECTORS[name]
    return cfg


def load_model(cfg: Config, checkpoint: str):
    """The config's model with the checkpoint (a stage-2 one in its stage 2), eval mode."""
    from mmdeblora.engine.stage2 import load_debias_model
    if is_detection(cfg):
        cfg = as_debias_detector(cfg)
    return load_debias_model(cfg, checkpoint).eval()


def build_split(cfg: Config, loader: str, overrides: Optional[dict] = None):
    """The data set of ``loader`` with the test pipeline (no augmentation);
    ``overrides``: dataset options merged in (the cluster pool's)."""
    from mmpretrain.registry import DATASETS
    ds_cfg = cfg[loader].dataset.copy()
    ds_cfg.update(copy.deepcopy(overrides or {}))
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


Features = Tuple[Tensor, Tensor, Tensor]  # features [N, D], labels [N], own predictions [N]


def premise_numbers(train: Features, evaluation: Features, classes, groups: dict,
                    settings, pool_x: Optional[Tensor] = None) -> dict:
    """Numbers a-c of one model: its tail spread, and the switch's h_c (``settings``: the
    de-biasing step's; ``pool_x``: the unlabelled cluster pool's features, which join the
    K-means fit) against the class's training mean as estimates of the class."""
    from mmdeblora.engine.debias import DebiasSettings, fit_on_features
    from mmdeblora.evaluation import bias_diagnostics as bd
    settings = settings or DebiasSettings(where='bias_diagnostics')
    (tx, ty, _), (ex, ey, _) = train, evaluation
    spread = bd.tail_spread(ex, ey, classes, groups)
    if settings.normalize:  # the switch's space
        tx, ex = torch.nn.functional.normalize(tx, dim=1), \
            torch.nn.functional.normalize(ex, dim=1)
        if pool_x is not None:
            pool_x = torch.nn.functional.normalize(pool_x, dim=1)
    state = fit_on_features(tx, ty, classes, settings, unlabelled_z=pool_x).state
    per_class = bd.center_estimates(state.class_centers, tx, ty, ex, ey, classes,
                                    state.calibrated_names)
    ratios = [r['ratio'] for r in per_class.values()]
    return dict(tail_spread=sum(spread.values()) / max(len(spread), 1),
                tail_spread_per_class=spread, centers=per_class,
                centers_own_nearest=sum(r['own_nearest'] for r in per_class.values()),
                centers_compared=len(per_class),
                center_mean_ratio=sum(ratios) / len(ratios) if ratios else float('nan'),
                pool_instances=0 if pool_x is None else int(pool_x.shape[0]))


def switch_settings_record(settings) -> dict:
    """The de-biasing settings numbers b-c used, for the json."""
    return dict(num_clusters=settings.num_clusters, kmeans=dict(settings.kmeans),
                weighting=settings.weighting, normalize=settings.normalize,
                pool=settings.pool, max_per_class=settings.max_per_class,
                calibrate_groups=list(settings.calibrate_groups),
                cluster_pool=copy.deepcopy(settings.cluster_pool))


def premise_prechecks(out: dict) -> None:
    """Pre-checks a-c into ``out['prechecks']`` / ``out['passed']``."""
    m, o = out['model']['premise'], out['oracle']['premise']
    p, ok = out['prechecks'], out['passed']
    p['a_tail_spread_ratio'] = m['tail_spread'] / max(o['tail_spread'], 1e-12)
    p['b_centers_own_nearest'] = m['centers_own_nearest']
    p['c_center_mean_ratio'] = m['center_mean_ratio']
    ok['a'] = p['a_tail_spread_ratio'] >= 1.5
    ok['b'] = m['centers_compared'] > 0 and \
        m['centers_own_nearest'] >= m['centers_compared'] - 1
    ok['c'] = p['c_center_mean_ratio'] < 1


def side_numbers(train: Features, evaluation: Features, classes, groups: dict,
                 siblings: dict, k: int, seed: int, settings=None,
                 pool_x: Optional[Tensor] = None) -> dict:
    """Numbers 1-6 and a-c of one model from its training and evaluation features
    (``settings``: the de-biasing step's, default its defaults)."""
    from mmdeblora.deblora.stats import feature_stats
    from mmdeblora.evaluation import bias_diagnostics as bd
    (tx, ty, _), (ex, ey, epred) = train, evaluation
    probe = bd.balanced_probe(tx, ty, len(classes))
    dist = bd.sibling_distance(ex, ey, classes, siblings)
    return dict(
        own=bd.group_f1(epred, ey, classes, groups),
        probe=bd.group_f1(probe(ex).argmax(1), ey, classes, groups),
        sibling_distance=sum(dist.values()) / len(dist),
        sibling_distance_per_class=dist,
        nearest_centroid_head_share=bd.nearest_centroid_head_share(
            tx, ty, ex, ey, classes, groups),
        distances=feature_stats(torch.nn.functional.normalize(ex, dim=1), ey, classes,
                                groups),
        head_cluster_share=bd.head_cluster_share(tx, ty, classes, groups, k, seed),
        premise=premise_numbers(train, evaluation, classes, groups, settings, pool_x))


def diagnose(model_cfg: Config, model, oracle, split: str, k: int, seed: int,
             cluster_pool: Optional[dict] = None) -> dict:
    """``cluster_pool``: replaces the config's DebLoRAHook.cluster_pool for b / c."""
    from mmdeblora.engine.stage2 import settings_from_config
    pool_opt = {} if cluster_pool is None else dict(cluster_pool=cluster_pool)
    settings = settings_from_config(model_cfg, **pool_opt)[0]
    if is_detection(model_cfg):
        return diagnose_detection(model_cfg, model, oracle, split, k, seed, settings)
    train_set = build_split(model_cfg, 'train_dataloader')
    eval_set = build_split(model_cfg, f'{split}_dataloader')
    pool_set = None if settings.cluster_pool is None else \
        build_split(model_cfg, 'train_dataloader', settings.cluster_pool)
    classes = list(eval_set.metainfo['classes'])
    groups = train_set.metainfo['groups']
    feats = {name: dict(train=extract(m, train_set), eval=extract(m, eval_set),
                        pool=None if pool_set is None else extract(m, pool_set)[0])
             for name, m in (('model', model), ('oracle', oracle))}
    siblings = siblings_for(model_cfg, classes, groups, feats['oracle']['eval'])
    out = dict(split=split, classes=classes, groups=groups, siblings=siblings,
               switch_settings=switch_settings_record(settings))
    for name, f in feats.items():
        out[name] = side_numbers(f['train'], f['eval'], classes, groups, siblings, k, seed,
                                 settings, f['pool'])
    m, o = out['model'], out['oracle']
    out['prechecks'] = {
        '1_tail_f1_gap': o['own']['tail_f1'] - m['own']['tail_f1'],
        '2_probe_tail_f1_gap': o['probe']['tail_f1'] - m['probe']['tail_f1'],
        '3_sibling_distance_ratio': m['sibling_distance'] / max(o['sibling_distance'], 1e-12),
    }
    p = out['prechecks']
    out['passed'] = {'1': p['1_tail_f1_gap'] >= 15, '2': p['2_probe_tail_f1_gap'] >= 10,
                     '3': p['3_sibling_distance_ratio'] <= 0.5}
    premise_prechecks(out)
    return out


# ---------------------------------------------------------------------- detection
def detection_loaders(cfg: Config, split: str, settings=None):
    """The switch's extraction loaders (test pipeline, GT loaded first, no shuffle) over
    the training scenes and over the ``split`` scenes, and the switch's settings
    (default: the config's)."""
    from mmengine.runner import Runner

    from mmdeblora.engine.debias import extraction_loader_cfg, innermost_dataset
    from mmdeblora.engine.stage2 import settings_from_config
    key = f'{split}_dataloader'
    if not cfg.get(key):
        raise ValueError(f'the config has no {key} (--split {split})')
    settings = settings or settings_from_config(cfg)[0]
    train = extraction_loader_cfg(cfg, settings)
    evaluation = copy.deepcopy(train)
    evaluation['dataset'] = copy.deepcopy(innermost_dataset(dict(cfg[key].dataset)))
    evaluation['dataset']['pipeline'] = copy.deepcopy(train['dataset']['pipeline'])
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmrotate')):
        return (Runner.build_dataloader(train), Runner.build_dataloader(evaluation),
                settings)


def gt_roi_classes(detector, roi_maps: Tensor) -> Tensor:
    """The class the detector's (last) bbox head gives each GT RoI map, as its prediction
    scores them (ResLT: fused branches; a custom loss: its activation), background out."""
    roi_head = detector.roi_head
    if getattr(roi_head, 'with_shared_head', False):
        roi_maps = roi_head.shared_head(roi_maps)
    head = roi_head.bbox_head
    head = head[-1] if isinstance(head, torch.nn.ModuleList) else head
    cls_score = head(roi_maps)[0]
    if hasattr(head, 'fuse'):  # ResLTBBoxHead predicts on its fused logits
        cls_score = head.fuse(cls_score)
    if getattr(head, 'custom_cls_channels', False):
        cls_score = head.loss_cls.get_activation(cls_score)
    return cls_score[:, :head.num_classes].argmax(1).cpu()


@torch.no_grad()
def extract_detection(detector, loader) -> Features:
    """GT RoI features (``instance_features``, avg-pooled, not normalised), labels, and
    the bbox head's class on the same RoI maps (captured from the RoI extractor's call)."""
    from mmdeblora.deblora import roi_extractor
    from mmdeblora.engine import extract_features
    preds = []
    handle = roi_extractor(detector).register_forward_hook(
        lambda module, args, maps: preds.append(gt_roi_classes(detector, maps)))
    try:
        x, y = extract_features(detector, loader, pool='avg', normalize=False, progress=False)
    finally:
        handle.remove()
    pred = torch.cat(preds) if preds else y.new_zeros(0)
    if pred.shape != y.shape:
        raise RuntimeError(f'{len(pred)} RoI classifications for {len(y)} GT boxes: the RoI '
                           'extractor ran other than once per batch with GT boxes')
    return x, y, pred


def class_counts(y: Tensor, classes) -> Dict[str, int]:
    """Instances per class name (the GT boxes the tool extracted, for the json)."""
    counts = torch.bincount(y, minlength=len(classes)).tolist()
    return dict(zip(classes, counts))


def diagnose_detection(cfg: Config, model, oracle, split: str, k: int, seed: int,
                       settings=None) -> dict:
    """Numbers 1-6 on the GT-box RoI features of both detectors (same scenes for both)."""
    from mmdeblora.engine import build_pool_loader, extract_features
    train_loader, eval_loader, settings = detection_loaders(cfg, split, settings)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmrotate')):
        pool_loader = build_pool_loader(cfg, settings)
    classes = list(train_loader.dataset.metainfo['classes'])
    feats = {name: dict(train=extract_detection(m, train_loader),
                        eval=extract_detection(m, eval_loader),
                        pool=None if pool_loader is None else extract_features(
                            m, pool_loader, pool='avg', normalize=False, progress=False)[0])
             for name, m in (('model', model), ('oracle', oracle))}
    train_y, eval_y = feats['model']['train'][1], feats['model']['eval'][1]
    for part, y in (('train', train_y), ('eval', eval_y)):
        if not torch.equal(y, feats['oracle'][part][1]):
            raise RuntimeError(f'the two detectors saw different {part} GT boxes')
    groups, _ = settings.resolve(classes, list(class_counts(train_y, classes).values()))
    siblings = siblings_for(cfg, classes, groups, feats['oracle']['eval'])
    out = dict(kind='detection', split=split, classes=classes, groups=groups,
               siblings=siblings, features=DET_FEATURES,
               instances=dict(train=class_counts(train_y, classes),
                              eval=class_counts(eval_y, classes)),
               switch_settings=switch_settings_record(settings))
    for name, f in feats.items():
        out[name] = side_numbers(f['train'], f['eval'], classes, groups, siblings, k, seed,
                                 settings, f['pool'])
    m, o = out['model'], out['oracle']
    out['prechecks'] = {  # 1: informative; the pre-check is the table's tail mAP gap
        '1_gt_roi_tail_f1_gap': o['own']['tail_f1'] - m['own']['tail_f1'],
        '2_probe_tail_f1_gap': o['probe']['tail_f1'] - m['probe']['tail_f1'],
        '3_sibling_distance_ratio': m['sibling_distance'] / max(o['sibling_distance'], 1e-12),
    }
    p = out['prechecks']
    out['passed'] = {'2': p['2_probe_tail_f1_gap'] >= 10,
                     '3': p['3_sibling_distance_ratio'] <= 0.5}
    premise_prechecks(out)
    return out


def own_name(res: dict) -> str:
    """What number 1 measures: the classifier's head, or a detector's RoI classifier on
    the GT boxes (informative)."""
    return 'GT-RoI classifier' if res.get('kind') == 'detection' else 'own classifier'


def format_report(res: dict) -> str:
    m, o = res['model'], res['oracle']
    rows = [f"bias diagnostics on the {res['split']} split (model vs balanced-data oracle)",
            f"{'':<44}{'model':>10}{'oracle':>10}"]
    if res.get('kind') == 'detection':
        n = {part: sum(c.values()) for part, c in res['instances'].items()}
        rows.insert(1, f"{res['features']}; {n['train']} train / {n['eval']} "
                    f"{res['split']} GT boxes")

    def row(label, a, b, fmt='{:>10.2f}'):
        rows.append(f'{label:<44}' + fmt.format(a) + fmt.format(b))

    for g in ('head', 'middle', 'tail'):
        row(f'{own_name(res)} {g} macro-F1', m['own'][f'{g}_f1'], o['own'][f'{g}_f1'])
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
    mp, op = m['premise'], o['premise']
    row('tail intra-class spread (centred)', mp['tail_spread'], op['tail_spread'],
        '{:>10.4f}')
    row(f"h_c nearest own held-out centroid (of {mp['centers_compared']})",
        mp['centers_own_nearest'], op['centers_own_nearest'], '{:>10d}')
    row('d(h_c, held-out) / d(train mean, held-out)', mp['center_mean_ratio'],
        op['center_mean_ratio'], '{:>10.3f}')
    rows.append('  per tail class (model): nearest held-out centroid to h_c, ratio')
    for name, r in mp['centers'].items():
        rows.append(f"    {name:<22}{r['nearest']:<22}{r['ratio']:>8.3f}")
    p, ok = res['prechecks'], res['passed']
    if '1' in ok:
        rows.append(f"pre-check 1 (tail F1 gap >= 15): {p['1_tail_f1_gap']:.2f} "
                    f"{'PASS' if ok['1'] else 'fail'}")
    else:
        rows.append(f"pre-check 1 is the tail mAP gap of the detection table (not computed "
                    f"here); GT-RoI classifier tail F1 gap {p['1_gt_roi_tail_f1_gap']:.2f} "
                    '(informative)')
    rows.append(f"pre-check 2 (probe tail F1 gap >= 10): {p['2_probe_tail_f1_gap']:.2f} "
                f"{'PASS' if ok['2'] else 'fail'}")
    rows.append(f"pre-check 3 (sibling distance ratio <= 0.5): "
                f"{p['3_sibling_distance_ratio']:.3f} {'PASS' if ok['3'] else 'fail'}")
    rows.append(f"premise a (tail spread ratio >= 1.5, for scattered): "
                f"{p['a_tail_spread_ratio']:.3f} {'PASS' if ok['a'] else 'fail'}")
    rows.append(f"premise b (h_c nearest its own held-out centroid, all but one): "
                f"{p['b_centers_own_nearest']} of {mp['centers_compared']} "
                f"{'PASS' if ok['b'] else 'fail'}")
    rows.append(f"premise c (mean d(h_c) / d(train mean) < 1): "
                f"{p['c_center_mean_ratio']:.3f} {'PASS' if ok['c'] else 'fail'}")
    if mp.get('pool_instances'):
        rows.append(f"(b, c: K-means also on {mp['pool_instances']} unlabelled cluster-pool "
                    'instances)')
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
NUMBERS += [('tail intra-class spread (centred)', ('premise', 'tail_spread')),
            ('h_c nearest own held-out centroid', ('premise', 'centers_own_nearest')),
            ('d(h_c, held-out) / d(train mean, ...)', ('premise', 'center_mean_ratio'))]


def mean_sd(values, fmt: str = '{:8.3f} +- {:6.3f}') -> str:
    """Mean and sample sd (NaN for one value) of a list of numbers, formatted."""
    from mmdeblora.utils.summary import fmt_mean_sd
    return fmt_mean_sd(values, fmt)


def aggregate(runs) -> str:
    """Mean and sample sd over runs (loaded --out files) of every number and pre-check."""
    rows = [f'{len(runs)} runs, split {sorted({r["split"] for r in runs})}',
            f"{'':<40}{'model':>20}{'oracle':>20}"]
    for label, keys in NUMBERS:
        label = label.replace('own classifier', own_name(runs[0]))
        vals = {}
        for side in ('model', 'oracle'):
            vals[side] = []
            for r in runs:
                v = r[side]
                for k in keys:
                    v = v.get(k, float('nan')) if isinstance(v, dict) else v
                vals[side].append(v)
        rows.append(f'{label:<40}{mean_sd(vals["model"]):>20}{mean_sd(vals["oracle"]):>20}')
    for key in runs[0]['prechecks']:  # (files written before a-c lack those: NaN)
        if key[0] in runs[0]['passed']:
            passed = sum(r['passed'].get(key[0], False) for r in runs)
            verdict = f'passed in {passed}/{len(runs)}'
        else:
            verdict = 'informative (detection: the pre-check is the tail mAP gap)'
        values = [r['prechecks'].get(key, float('nan')) for r in runs]
        rows.append(f"pre-check {key:<34}{mean_sd(values):>20}   {verdict}")
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
    args.oracle_config = args.oracle_config or (DET_ORACLE_CFG if is_detection(cfg)
                                                else ORACLE_CFG)
    oracle_cfg = load_cfg(args.oracle_config, args.cfg_options)
    if is_detection(cfg) != is_detection(oracle_cfg):
        raise SystemExit(f'{args.config} and the oracle config {args.oracle_config} are not '
                         'both detectors or both classifiers')
    for path in (args.checkpoint, args.oracle_checkpoint):
        if not osp.isfile(path):
            raise FileNotFoundError(f'checkpoint {path!r} does not exist')
    res = diagnose(cfg, load_model(cfg, args.checkpoint),
                   load_model(oracle_cfg, args.oracle_checkpoint), args.split, args.k,
                   args.seed, args.cluster_pool)
    res.update(config=args.config, checkpoint=args.checkpoint,
               oracle_config=args.oracle_config, oracle_checkpoint=args.oracle_checkpoint)
    print(format_report(res))
    if args.out:
        with atomic_open(args.out) as fh:
            json.dump(res, fh, indent=2)


if __name__ == '__main__':
    main()
