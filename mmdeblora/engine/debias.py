"""The de-biasing step, runner-free: model + data loader + settings -> ``DebiasResult``.

``debias_model`` runs steps 1-3 of debLoRA on a model that implements the de-biasing
interface (``mmdeblora.models.DebiasModel``):

1. one feature per training instance (eval mode, no augmentation, a progress bar on rank
   0), gathered over ranks under DDP;
2. class-agnostic K-means on them (optionally on at most ``max_per_class`` instances per
   class; groups, alphas and the loss scale always use the natural counts);
3. the de-biased centers h_c, alpha_c, the calibrated targets and the feature statistics.

``DebLoRAHook`` calls it at the switch, ``tools/debias.py`` on a checkpoint and
``benchmarks/bench_debias.py`` to time it; nothing here needs a runner.
"""
import copy
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from mmengine import dist
from mmengine.utils import ProgressBar
from torch import Tensor

from mmdeblora.datasets.class_groups import GROUP_NAMES, GroupSpec, check_group_spec, resolve_groups
from mmdeblora.deblora import (ALPHA_MODES, POOLS, WEIGHTINGS, DebiasState, calibrate,
                               calibrated_mask, cap_per_class, feature_stats, fit_debias)
from mmdeblora.deblora.settings import check_bool, check_keys, check_number

KMEANS_KEYS = ('n_init', 'max_iter', 'tol', 'seed', 'chunk_size', 'device')
_GT_FIRST = ('LoadAnnotations', 'ConvertBoxType')


@dataclass
class DebiasSettings:
    """Options of steps 1-3, checked on creation (errors name ``<where>.<option>``).

    See docs/deblora.md ("Every open choice and its default") for each option and why its
    default was chosen.
    """
    num_clusters: int = 32
    kmeans: Dict[str, Any] = field(default_factory=dict)
    weighting: str = 'balanced'
    alpha_mode: str = 'imbalance'
    alpha: float = 0.5
    alpha_max: float = 0.5
    groups: GroupSpec = 'dota'
    group_thresholds: Optional[Dict[str, float]] = None
    calibrate_groups: Sequence[str] = ('tail', )
    pool: str = 'avg'
    normalize: bool = True
    renormalize: bool = True
    max_per_class: Optional[int] = None
    sample_seed: int = 0
    extract_pipeline: Optional[List[dict]] = None
    extract_batch_size: int = 4
    extract_num_workers: int = 0
    cluster_pool: Optional[Dict[str, Any]] = None
    where: str = 'DebLoRAHook'

    def __post_init__(self) -> None:
        w = self.where
        check_number(self.num_clusters, f'{w}.num_clusters', 1, integer=True)
        km = dict(self.kmeans or {})
        check_keys(km, KMEANS_KEYS, f'{w}.kmeans')
        for key, low in (('n_init', 1), ('max_iter', 1), ('chunk_size', 1)):
            if key in km:
                check_number(km[key], f'{w}.kmeans.{key}', low, integer=True)
        if 'tol' in km:
            check_number(km['tol'], f'{w}.kmeans.tol', 0)
        if 'seed' in km:
            check_number(km['seed'], f'{w}.kmeans.seed', 0, integer=True)
        self.kmeans = {**dict(n_init=3, max_iter=100, tol=1e-4, seed=0), **km}
        for key, allowed in (('weighting', WEIGHTINGS), ('alpha_mode', ALPHA_MODES),
                             ('pool', POOLS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f'{w}.{key} must be one of {list(allowed)}, got '
                                 f'{getattr(self, key)!r}')
        check_number(self.alpha, f'{w}.alpha', 0, 1)
        check_number(self.alpha_max, f'{w}.alpha_max', 0, 1)
        check_group_spec(self.groups, f'{w}.groups')
        if isinstance(self.calibrate_groups, str):
            self.calibrate_groups = (self.calibrate_groups, )
        self.calibrate_groups = tuple(self.calibrate_groups)
        bad = [g for g in self.calibrate_groups if g not in GROUP_NAMES]
        if bad or not self.calibrate_groups:
            raise ValueError(f'{w}.calibrate_groups must be a non-empty subset of '
                             f'{list(GROUP_NAMES)}, got {list(self.calibrate_groups)}')
        for key in ('normalize', 'renormalize'):
            check_bool(getattr(self, key), f'{w}.{key}')
        if self.max_per_class is not None:
            check_number(self.max_per_class, f'{w}.max_per_class', 1, integer=True)
        check_number(self.sample_seed, f'{w}.sample_seed', 0, integer=True)
        check_number(self.extract_batch_size, f'{w}.extract_batch_size', 1, integer=True)
        check_number(self.extract_num_workers, f'{w}.extract_num_workers', 0, integer=True)
        if self.extract_pipeline is not None and not isinstance(self.extract_pipeline,
                                                                (list, tuple)):
            raise TypeError(f'{w}.extract_pipeline must be a list of transforms')
        if self.cluster_pool is not None:
            if not isinstance(self.cluster_pool, dict) or not self.cluster_pool:
                raise TypeError(f'{w}.cluster_pool must be a non-empty dict of dataset '
                                'options (merged into the training dataset config), got '
                                f'{self.cluster_pool!r}')
            if 'pipeline' in self.cluster_pool:
                raise ValueError(f'{w}.cluster_pool takes the extraction pipeline '
                                 f'({w}.extract_pipeline or the val pipeline); remove its '
                                 "'pipeline'")
            self.cluster_pool = copy.deepcopy(dict(self.cluster_pool))

    @classmethod
    def keys(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != 'where')

    def resolve(self, classes: Sequence[str],
                natural_counts: Sequence[int]) -> Tuple[Dict[str, List[str]], List[bool]]:
        """Groups (from the natural counts for ``'auto'``) and the calibrated classes."""
        groups = resolve_groups(classes, natural_counts, self.groups, self.group_thresholds)
        cal = calibrated_mask(len(classes), classes, groups, self.calibrate_groups)
        return groups, cal


@dataclass
class DebiasResult:
    """The state stage 2 needs, plus what the reports show."""
    state: DebiasState
    z: Tensor        # clustered features [N, D] (after max_per_class)
    z_hat: Tensor    # their calibrated targets
    labels: Tensor   # [N]
    groups: Dict[str, List[str]]


# ---------------------------------------------------------------------- data
def extraction_pipeline(pipeline: Sequence[dict]) -> List[dict]:
    """The val/test pipeline with GT loading moved right after image loading.

    mmdet test pipelines load annotations after ``Resize`` so boxes stay in the original
    frame for evaluation; RoI features need them in the resized frame. A pipeline without
    ``LoadAnnotations`` (classification: labels come from the dataset) is kept as is.
    """
    pipeline = [copy.deepcopy(dict(t)) for t in pipeline]
    kind = [str(t['type']).split('.')[-1] for t in pipeline]
    gt = [t for t, k in zip(pipeline, kind) if k in _GT_FIRST]
    if 'LoadAnnotations' not in kind:
        return pipeline
    rest = [t for t, k in zip(pipeline, kind) if k not in _GT_FIRST]
    first = next((i for i, t in enumerate(rest)
                  if str(t['type']).split('.')[-1] == 'LoadImageFromFile'), -1)
    return rest[:first + 1] + gt + rest[first + 1:]


def innermost_dataset(ds_cfg: dict) -> dict:
    """Unwrap RepeatDataset / ClassBalancedDataset configs: extraction sees every
    instance once, without resampling."""
    while 'pipeline' not in ds_cfg and 'dataset' in ds_cfg:
        ds_cfg = ds_cfg['dataset']
    return ds_cfg


def extraction_loader_cfg(cfg, settings: DebiasSettings, pool: bool = False) -> dict:
    """Loader config over the training set with the val pipeline (GT first), no shuffle,
    no padding of the last batch. ``pool``: over the unlabelled ``cluster_pool`` instead
    (the training dataset config with the pool's options merged in)."""
    ds = copy.deepcopy(innermost_dataset(dict(cfg.train_dataloader.dataset)))
    if pool:
        if settings.cluster_pool is None:
            raise ValueError(f'{settings.where}.cluster_pool is not set')
        ds.update(copy.deepcopy(settings.cluster_pool))
    if settings.extract_pipeline is not None:
        ds['pipeline'] = copy.deepcopy(list(settings.extract_pipeline))
    else:
        val = cfg.get('val_dataloader') or cfg.get('test_dataloader')
        if not val:
            raise ValueError(f'{settings.where}.extract_pipeline is needed when the config '
                             'has no val/test dataloader')
        ds['pipeline'] = extraction_pipeline(innermost_dataset(dict(val.dataset))['pipeline'])
    loader = dict(batch_size=settings.extract_batch_size,
                  num_workers=settings.extract_num_workers, persistent_workers=False,
                  sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
                  dataset=ds)
    if 'collate_fn' in cfg.train_dataloader:
        loader['collate_fn'] = copy.deepcopy(cfg.train_dataloader.collate_fn)
    return loader


def build_extraction_loader(cfg, settings: DebiasSettings):
    """The extraction data loader of a config (mmengine's own builder, no runner)."""
    from mmengine.runner import Runner
    return Runner.build_dataloader(extraction_loader_cfg(cfg, settings))


def build_pool_loader(cfg, settings: DebiasSettings):
    """The extraction loader over ``cluster_pool`` (None without one); a pool that cannot
    be built or is empty fails here, naming the option."""
    if settings.cluster_pool is None:
        return None
    from mmengine.runner import Runner
    try:
        loader = Runner.build_dataloader(extraction_loader_cfg(cfg, settings, pool=True))
    except Exception as e:
        raise ValueError(f'{settings.where}.cluster_pool={settings.cluster_pool!r} cannot '
                         f'be built ({type(e).__name__}: {e})') from e
    if len(loader.dataset) == 0:
        raise ValueError(f'{settings.where}.cluster_pool={settings.cluster_pool!r} holds '
                         'no instance')
    return loader


def preflight(model, data_loader, settings: DebiasSettings) -> None:
    """Before stage 1 trains: classes, groups, a calibrated class, and one batch through
    the extraction path (a wrong pipeline or feature setting fails here, not at the
    switch epochs later)."""
    from mmdeblora.datasets.class_stats import dataset_class_counts
    classes = list(data_loader.dataset.metainfo['classes'])
    if len(classes) != model.debias_num_classes:
        raise ValueError(f'the training set has {len(classes)} classes, the model '
                         f'{model.debias_num_classes}')
    counts = dataset_class_counts(data_loader.dataset)
    groups, cal = settings.resolve(classes, counts)
    if not any(c and n > 0 for c, n in zip(cal, counts)):
        raise ValueError(
            f'{settings.where} would calibrate no class: calibrate_groups='
            f'{list(settings.calibrate_groups)} of groups={settings.groups!r} gives '
            f'{groups}, and none of those classes has a training instance (counts '
            f'{dict(zip(classes, counts))})')
    dry_extract(model, data_loader, settings,
                f'{settings.where}: a dry run of the feature extraction on the first '
                f'training batch failed ({{}}); check {settings.where}.extract_pipeline or '
                'the val pipeline it is derived from')


def preflight_pool(model, data_loader, settings: DebiasSettings) -> None:
    """One batch of the ``cluster_pool`` through the extraction path, before stage 1."""
    dry_extract(model, data_loader, settings,
                f'{settings.where}.cluster_pool: a dry run of the feature extraction on '
                'its first batch failed ({})')


def dry_extract(model, data_loader, settings: DebiasSettings, message: str) -> None:
    """The loader's first batch through ``instance_features`` in eval mode (the mode
    restored); a failure is raised as ``RuntimeError(message.format(cause))``."""
    was = model.training
    try:
        with torch.no_grad():
            model.eval()
            data = model.data_preprocessor(next(iter(data_loader)), False)
            model.instance_features(data['inputs'], data['data_samples'],
                                    pool=settings.pool)
    except Exception as e:
        raise RuntimeError(message.format(f'{type(e).__name__}: {e}')) from e
    finally:
        model.train(was)


# ---------------------------------------------------------------------- steps
def gather_cat(x: Tensor) -> Tensor:
    """Concatenation of ``x`` of all ranks in rank order (``x`` itself when not distributed).

    Sizes along dim 0 may differ between ranks (each rank extracts its own shard), so the
    object gather is used; the result lands on ``x``'s device on every rank.
    """
    if dist.get_world_size() == 1:
        return x
    parts = dist.all_gather_object(x.detach().cpu())
    return torch.cat(parts).to(x.device)


def eval_batches(model, data_loader, progress: bool = True) -> Iterator[dict]:
    """The loader's batches through the model's data preprocessor, with the model in eval
    mode (its mode restored afterwards) and a progress bar (rate, ETA) on rank 0."""
    bar = ProgressBar(len(data_loader)) if progress and dist.is_main_process() else None
    was_training = model.training
    model.eval()
    try:
        for batch in data_loader:
            yield model.data_preprocessor(batch, False)
            if bar is not None:
                bar.update()
    finally:
        model.train(was_training)
        if bar is not None:
            bar.file.write('\n')


@torch.no_grad()
def extract_features(model, data_loader, adapters: Optional[Sequence[str]] = None,
                     pool: str = 'avg', normalize: bool = True,
                     progress: bool = True) -> Tuple[Tensor, Tensor]:
    """Features and labels of every instance the loader yields, model in eval mode.

    The model's mode is restored afterwards. A progress bar (rate, ETA) is shown on rank 0.
    Returns CPU tensors of this rank's shard.
    """
    zs: List[Tensor] = []
    ys: List[Tensor] = []
    for data in eval_batches(model, data_loader, progress):
        z, y = model.instance_features(data['inputs'], data['data_samples'], adapters,
                                       pool, normalize)
        zs.append(z.float().cpu())
        ys.append(y.long().cpu())
    if not zs:
        raise ValueError('feature extraction got an empty data loader')
    return torch.cat(zs), torch.cat(ys)


def debias_model(model, data_loader, settings: DebiasSettings,
                 adapters: Optional[Sequence[str]] = None,
                 log_fn: Optional[Callable[[str], None]] = None,
                 progress: bool = True, pool_loader=None) -> DebiasResult:
    """Steps 1-3 of debLoRA on ``model`` (unchanged by this call).

    ``adapters``: the adapters active during extraction (default: the model's current
    ones, i.e. the stage-1 model at the switch). ``pool_loader``: the unlabelled
    ``cluster_pool`` (``build_pool_loader``), whose features join the K-means fit with
    their labels dropped. Every rank returns the same result.
    """
    classes = list(data_loader.dataset.metainfo['classes'])
    if dist.is_distributed():  # one model on every rank (DDP leaves BN buffers per rank)
        dist.all_reduce_params(model.buffers(), op='mean')
    z, y = extract_features(model, data_loader, adapters, settings.pool,
                            settings.normalize, progress)
    z, y = gather_cat(z), gather_cat(y)
    natural = torch.bincount(y, minlength=len(classes)).tolist()
    if log_fn:
        log_fn(f'debias: {len(y)} instances of {sum(n > 0 for n in natural)} classes '
               f'extracted, feature dim {z.shape[1]}')
    unlabelled_z = None
    if pool_loader is not None:
        unlabelled_z = gather_cat(extract_features(model, pool_loader, adapters,
                                                   settings.pool, settings.normalize,
                                                   progress)[0])
        if log_fn:
            log_fn(f'debias: {len(unlabelled_z)} unlabelled instances of the cluster pool '
                   'join the clustering')
    return fit_on_features(z, y, classes, settings, next(model.parameters()).device, log_fn,
                           unlabelled_z=unlabelled_z)


def fit_on_features(z: Tensor, y: Tensor, classes: Sequence[str], settings: DebiasSettings,
                    device=None, log_fn: Optional[Callable[[str], None]] = None,
                    unlabelled_z: Optional[Tensor] = None) -> DebiasResult:
    """Steps 2-3 on extracted (all ranks', ``settings.normalize``-d) features ``z`` with
    labels ``y`` (``unlabelled_z``: the unlabelled cluster pool's, same space): what
    ``debias_model`` does after extraction, and what the diagnostics tool runs on a
    model's training features to see the switch's h_c. K-means runs on
    ``settings.kmeans['device']``, else ``device``, else ``z``'s device."""
    natural = torch.bincount(y, minlength=len(classes)).tolist()
    groups, cal = settings.resolve(classes, natural)
    keep = cap_per_class(y, settings.max_per_class, settings.sample_seed)
    z, y = z[keep], y[keep]
    km = dict(settings.kmeans)
    device = km.pop('device', None) or device or z.device
    state = fit_debias(z.to(device), y.to(device), classes, cal, natural_counts=natural,
                       groups=groups, num_clusters=settings.num_clusters, kmeans_cfg=km,
                       weighting=settings.weighting, alpha_mode=settings.alpha_mode,
                       alpha=settings.alpha, alpha_max=settings.alpha_max,
                       pool=settings.pool, normalize=settings.normalize,
                       renormalize=settings.renormalize, log_fn=log_fn,
                       unlabelled_z=None if unlabelled_z is None
                       else unlabelled_z.to(device))
    z_hat = calibrate(z, y, state.class_centers, state.alphas, state.renormalize)
    state.stats = dict(before=feature_stats(z, y, classes, groups),
                       after=feature_stats(z_hat, y, classes, groups))
    return DebiasResult(state=state, z=z, z_hat=z_hat, labels=y, groups=groups)
