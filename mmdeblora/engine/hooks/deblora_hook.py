"""DebLoRAHook: the stage switch of debLoRA inside one training run.

At the start of epoch ``switch_epoch`` (i.e. after ``switch_epoch`` stage-1 epochs) it
1. extracts one feature per GT instance of the training set with the stage-1 model (eval
   mode, the val pipeline with GT loaded before the resize: no augmentation, boxes in the
   resized frame), gathered over ranks;
2. clusters them (class-agnostic K-means), builds n_kc, h_c and alpha_c
   (``mmdeblora.deblora``), logs sizes, counts, alphas and feature statistics and writes
   them to ``<work_dir>/deblora/``;
3. adds the ``deblora`` adapter, freezes the stage-1 adapter (and by default the neck and
   the backbone's trainable norms, so the stage-1 model behind the targets stays fixed),
   switches the detector's feature loss on, and rebuilds the optimizer's parameter groups
   in place for the new trainable set (schedulers keep their progress).

Its state goes into every checkpoint (``checkpoint['deblora']``). mmengine's
``Runner.load_checkpoint`` calls ``after_load_checkpoint`` *before* it loads the model's
state dict and ``Runner.resume`` loads the optimizer after that, so a stage-2 checkpoint
first re-creates the adapter and the stage-2 parameter groups here, then its weights and
optimizer state load into them; nothing is re-clustered. A stage-1 checkpoint changes
nothing, so resuming before the switch runs as if never interrupted.
"""
import copy
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine import dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmrotate.registry import HOOKS

from mmdeblora.datasets.class_groups import DOTA_GROUPS, check_groups, groups_from_counts
from mmdeblora.deblora import (DebiasState, calibrate, calibrated_mask, cap_per_class,
                               extract_dataset_features, feature_stats, fit_debias)
from .gather import gather_cat

_GT_FIRST = ('LoadAnnotations', 'ConvertBoxType')


def extraction_pipeline(pipeline: Sequence[dict]) -> List[dict]:
    """The val/test pipeline with GT loading moved right after image loading.

    mmdet test pipelines load annotations after ``Resize`` so boxes stay in the original
    frame for evaluation; RoI features need them in the resized frame.
    """
    pipeline = [copy.deepcopy(dict(t)) for t in pipeline]
    gt = [t for t in pipeline if str(t['type']).split('.')[-1] in _GT_FIRST]
    if not any(str(t['type']).split('.')[-1] == 'LoadAnnotations' for t in gt):
        raise ValueError('the pipeline used for feature extraction loads no annotations; '
                         'give DebLoRAHook an extract_pipeline with LoadAnnotations')
    rest = [t for t in pipeline if t not in gt]
    first = next((i for i, t in enumerate(rest)
                  if str(t['type']).split('.')[-1] == 'LoadImageFromFile'), -1)
    return rest[:first + 1] + gt + rest[first + 1:]


def _innermost_dataset(ds_cfg: dict) -> dict:
    """Unwrap RepeatDataset / ClassBalancedDataset configs: extraction sees every
    instance once, without resampling."""
    while 'pipeline' not in ds_cfg and 'dataset' in ds_cfg:
        ds_cfg = ds_cfg['dataset']
    return ds_cfg


@HOOKS.register_module()
class DebLoRAHook(Hook):
    """Cluster, calibrate and start the debLoRA stage at ``switch_epoch``.

    Args:
        switch_epoch: stage-1 epochs; stage 2 starts at this (0-based) epoch.
        num_clusters: K of the class-agnostic K-means.
        kmeans: ``n_init``, ``max_iter``, ``tol``, ``seed``, ``chunk_size``, ``device``.
        weighting: ``'balanced'`` (w_kc ~ n_kc / n_k) or ``'class_share'`` (w_kc ~ n_kc).
        alpha_mode, alpha, alpha_max: ``'fixed'`` (``alpha`` for every calibrated class)
            or ``'imbalance'`` (rarer classes more, up to ``alpha_max``).
        groups: ``'dota'`` (DOTA_GROUPS), ``'counts'`` (from the extracted instance
            counts) or a dict group -> class names.
        calibrate_groups: groups whose classes are calibrated (default tail only).
        loss_weight: lambda of the feature loss (0.2: the toy ablation in docs/deblora.md;
            1.0 made the new adapter diverge there).
        loss_normalize: divide the feature loss by the mean calibration gap
            ||z - z_hat||^2 of the extracted instances, so lambda means the same for any
            backbone (the raw gap per instance was ~0.006 for the toy ResNet-18 and
            ~0.6 for the tiny SD UNet).
        pool, normalize: how a RoI feature becomes a vector (see mmdeblora.deblora).
        max_per_class, sample_seed: cap of instances per class for clustering (seeded).
        adapter_name, adapter_cfg: the new adapter (``rank``, ``alpha``, ...; default the
            backbone's config).
        stage1_adapters: the adapters that make the stage-1 model (frozen in stage 2).
        freeze_neck, freeze_backbone_extra: freeze the neck and the backbone's
            ``trainable_extra`` parameters (norms) in stage 2. They are shared by the
            student and the stage-1 target path, so while they train the online targets
            move (measured: the feature loss then grows instead of falling) and leave the
            space the centers were computed in.
        extract_pipeline: pipeline for extraction (default: the val pipeline, GT first).
        extract_batch_size, extract_num_workers: the extraction loader.
        log_interval: batches between extraction progress lines.
    """

    priority = 'NORMAL'

    def __init__(self,
                 switch_epoch: int,
                 num_clusters: int = 32,
                 kmeans: Optional[dict] = None,
                 weighting: str = 'balanced',
                 alpha_mode: str = 'fixed',
                 alpha: float = 0.5,
                 alpha_max: float = 0.5,
                 groups: Union[str, Dict[str, List[str]]] = 'dota',
                 calibrate_groups: Sequence[str] = ('tail', ),
                 loss_weight: float = 0.2,
                 loss_normalize: bool = True,
                 pool: str = 'avg',
                 normalize: bool = True,
                 max_per_class: Optional[int] = None,
                 sample_seed: int = 0,
                 adapter_name: str = 'deblora',
                 adapter_cfg: Optional[dict] = None,
                 stage1_adapters: Sequence[str] = ('default', ),
                 freeze_neck: bool = True,
                 freeze_backbone_extra: bool = True,
                 extract_pipeline: Optional[List[dict]] = None,
                 extract_batch_size: int = 4,
                 extract_num_workers: int = 0,
                 log_interval: int = 50) -> None:
        if switch_epoch < 0:
            raise ValueError(f'switch_epoch must be >= 0, got {switch_epoch}')
        if isinstance(groups, str) and groups not in ('dota', 'counts'):
            raise ValueError(f"groups must be 'dota', 'counts' or a dict, got {groups!r}")
        self.switch_epoch = switch_epoch
        self.num_clusters = num_clusters
        self.kmeans = {**dict(n_init=3, max_iter=100, tol=1e-4, seed=0), **(kmeans or {})}
        self.weighting, self.alpha_mode = weighting, alpha_mode
        self.alpha, self.alpha_max = alpha, alpha_max
        self.groups, self.calibrate_groups = groups, tuple(calibrate_groups)
        self.loss_weight, self.pool, self.normalize = loss_weight, pool, normalize
        self.loss_normalize = loss_normalize
        self.max_per_class, self.sample_seed = max_per_class, sample_seed
        self.adapter_name, self.adapter_cfg = adapter_name, dict(adapter_cfg or {})
        self.stage1_adapters = list(stage1_adapters)
        self.freeze_neck = freeze_neck
        self.freeze_backbone_extra = freeze_backbone_extra
        self.extract_pipeline = extract_pipeline
        self.extract_batch_size = extract_batch_size
        self.extract_num_workers = extract_num_workers
        self.log_interval = log_interval
        self.stage = 1
        self.state: Optional[DebiasState] = None
        self.switched_at: Optional[int] = None

    # ------------------------------------------------------------------ hook points
    def before_train(self, runner) -> None:
        if self.stage == 1 and self.switch_epoch >= runner.max_epochs:
            runner.logger.warning(f'DebLoRAHook: switch_epoch={self.switch_epoch} >= '
                                  f'max_epochs={runner.max_epochs}: no debLoRA stage')

    def before_train_epoch(self, runner) -> None:
        if self.stage == 1 and runner.epoch >= self.switch_epoch:
            self.switch(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['deblora'] = dict(
            stage=self.stage, switched_at=self.switched_at,
            state=None if self.state is None else self.state.to_dict())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        info = checkpoint.get('deblora')
        if not info or info.get('stage', 1) != 2:
            return
        self.switched_at = info.get('switched_at')
        runner.logger.info('DebLoRAHook: stage-2 checkpoint, restoring the debLoRA '
                           'adapter and state without re-clustering')
        self.enter_stage2(runner, DebiasState.from_dict(info['state']))

    # ------------------------------------------------------------------ the switch
    def compute_state(self, runner):
        """Steps 1-4 on the current model: returns (state, z, z_hat, y, groups); no switch.

        Used by ``switch`` and by tools/debias.py on a stage-1 checkpoint.
        """
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        log = runner.logger.info
        loader = self._extract_loader(runner)
        was_training = model.training
        model.eval()
        try:
            z, y = extract_dataset_features(model, loader, self.pool, self.normalize,
                                            log_fn=log, log_interval=self.log_interval)
        finally:
            model.train(was_training)
        z, y = gather_cat(z), gather_cat(y)
        keep = cap_per_class(y, self.max_per_class, self.sample_seed)
        z, y = z[keep], y[keep]
        classes = list(loader.dataset.metainfo['classes'])
        groups = self._groups(classes, y)
        cal = calibrated_mask(len(classes), classes, groups, self.calibrate_groups)
        km = dict(self.kmeans)
        device = km.pop('device', None) or next(model.parameters()).device
        state = fit_debias(z.to(device), y.to(device), classes, cal, self.num_clusters,
                           km, self.weighting, self.alpha_mode, self.alpha,
                           self.alpha_max, self.pool, self.normalize, log_fn=log)
        z_hat = calibrate(z, y, state.class_centers, state.alphas)
        state.stats = dict(before=feature_stats(z, y, classes, groups),
                           after=feature_stats(z_hat, y, classes, groups))
        self.log_state(state, log)
        return state, z, z_hat, y, groups

    def switch(self, runner) -> None:
        """Extract, cluster, calibrate, log and enter stage 2 (all ranks)."""
        runner.logger.info(f'DebLoRAHook: end of stage 1 at epoch {runner.epoch}, '
                           'extracting features')
        state = self.compute_state(runner)[0]
        self.switched_at = runner.epoch
        if dist.is_main_process():
            out = osp.join(runner.work_dir, 'deblora')
            os.makedirs(out, exist_ok=True)
            state.save(out)
            write_counts_csv(state, osp.join(out, 'counts.csv'))
        self.enter_stage2(runner, state)

    def enter_stage2(self, runner, state: DebiasState) -> None:
        """Add/freeze adapters, switch the loss on, rebuild the optimizer (idempotent)."""
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        bb = model.backbone
        if not hasattr(bb, 'add_adapter'):
            raise TypeError(f'DebLoRAHook needs a LoRABackbone, got {type(bb).__name__}')
        if not hasattr(model, 'set_debias'):
            raise TypeError('DebLoRAHook needs the DebLoRAFasterRCNN detector, got '
                            f'{type(model).__name__}')
        if self.adapter_name not in bb.adapter_names:
            bb.add_adapter(self.adapter_name, **self.adapter_cfg)
        for name in self.stage1_adapters:
            bb.freeze_adapter(name)
        bb.unfreeze_adapter(self.adapter_name)
        if self.freeze_backbone_extra:
            bb.set_trainable_extra([])
        bb.set_active_adapters(self.stage1_adapters + [self.adapter_name])
        if self.freeze_neck and getattr(model, 'neck', None) is not None:
            model.neck.requires_grad_(False)
        model.set_debias(state.class_centers, state.alphas, self.loss_weight, state.pool,
                         state.normalize, self.stage1_adapters,
                         state.loss_scale if self.loss_normalize else 1.0)
        if is_model_wrapper(runner.model) and dist.get_world_size() > 1:
            # DDP registers the parameters that need grad when it is built: wrap again
            runner.model = runner.wrap_model(None, model)
        if isinstance(runner.optim_wrapper, OptimWrapper):
            rebuild_param_groups(runner)
        self.stage, self.state = 2, state
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        runner.logger.info(f'DebLoRAHook: stage 2, adapters {bb.active_adapters} active, '
                           f'{n} trainable parameters')

    # ------------------------------------------------------------------ helpers
    def _groups(self, classes: List[str], y: torch.Tensor) -> Dict[str, List[str]]:
        if isinstance(self.groups, dict):
            groups = {k: list(v) for k, v in self.groups.items()}
        elif self.groups == 'counts':
            counts = torch.bincount(y, minlength=len(classes)).tolist()
            groups = groups_from_counts(classes, counts)
        else:
            groups = {k: [c for c in v if c in classes] for k, v in DOTA_GROUPS.items()}
        check_groups(groups, classes)
        return groups

    def _extract_loader(self, runner):
        cfg = runner.cfg
        ds = copy.deepcopy(_innermost_dataset(cfg.train_dataloader.dataset))
        if self.extract_pipeline is not None:
            ds['pipeline'] = copy.deepcopy(self.extract_pipeline)
        else:
            val = cfg.get('val_dataloader') or cfg.get('test_dataloader')
            if not val:
                raise ValueError('DebLoRAHook needs extract_pipeline when the config has '
                                 'no val/test dataloader')
            ds['pipeline'] = extraction_pipeline(_innermost_dataset(val.dataset).pipeline)
        loader = dict(batch_size=self.extract_batch_size,
                      num_workers=self.extract_num_workers,
                      persistent_workers=False,
                      sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
                      dataset=ds)
        if 'collate_fn' in cfg.train_dataloader:
            loader['collate_fn'] = cfg.train_dataloader.collate_fn
        return runner.build_dataloader(loader)

    @staticmethod
    def log_state(state: DebiasState, log) -> None:
        names = state.class_names
        log(f'DebLoRAHook: K-means inertia {state.inertia:.6g}, cluster sizes '
            f'{state.cluster_sizes.tolist()}')
        log('DebLoRAHook: cluster x class counts n_kc (rows: clusters)\n' +
            counts_table(state))
        log('DebLoRAHook: alpha per class ' + ', '.join(
            f'{n}={a:.3f}' for n, a in zip(names, state.alphas.tolist())))
        for when, st in state.stats.items():
            log(f'DebLoRAHook: feature stats {when} calibration: ' +
                ', '.join(f'{k}={v:.4f}' for k, v in st.items()))


def counts_table(state: DebiasState) -> str:
    header = 'k\\c ' + ' '.join(f'{i:>5d}' for i in range(len(state.class_names)))
    rows = [f'{k:>3d} ' + ' '.join(f'{v:>5d}' for v in row)
            for k, row in enumerate(state.counts.tolist())]
    return '\n'.join([header] + rows)


def write_counts_csv(state: DebiasState, path: str) -> None:
    """The cluster x class count matrix with class names as the header."""
    with open(path, 'w') as f:
        f.write('cluster,size,' + ','.join(state.class_names) + '\n')
        for k, row in enumerate(state.counts.tolist()):
            f.write(f'{k},{sum(row)},' + ','.join(map(str, row)) + '\n')


def rebuild_param_groups(runner) -> None:
    """Re-derive the optimizer's groups for the current trainable set, in place.

    The groups come from the config's own constructor (``build_optim_wrapper``, so
    ``paramwise_cfg`` applies to the new adapter too), keeping only parameters that
    require grad. The same torch optimizer object is kept so the param schedulers
    (which hold the wrapper) go on; learning rates keep the run's scaling (e.g.
    auto_scale_lr) and the schedule's current factor. Momentum state of parameters that
    stay is kept.
    """
    opt = runner.optim_wrapper.optimizer
    fresh = build_optim_wrapper(runner.model, copy.deepcopy(runner.cfg.optim_wrapper))
    fresh_opt = fresh.optimizer
    old_of = {id(p): g for g in opt.param_groups for p in g['params']}
    fresh_of = {id(p): g for g in fresh_opt.param_groups for p in g['params']}
    groups = []
    for g in fresh_opt.param_groups:
        params = [p for p in g['params'] if p.requires_grad]
        if params:
            groups.append(dict(g, params=params))
    if not groups:
        raise RuntimeError('DebLoRAHook: no trainable parameter left for stage 2')
    ref = next((p for g in groups for p in g['params'] if id(p) in old_of), None)
    keys = {'lr'} | {k[len('initial_'):] for g in opt.param_groups for k in g
                     if k.startswith('initial_')}
    if ref is not None:
        og, fg = old_of[id(ref)], fresh_of[id(ref)]
        for key in keys:
            if key not in fg or key not in og:
                continue
            init_key = f'initial_{key}'
            if init_key in og:
                scale = og[init_key] / fg[key] if fg[key] else 1.0
                now = og[key] / og[init_key] if og[init_key] else 1.0
                for g in groups:
                    g[init_key] = g[key] * scale
                    g[key] = g[init_key] * now
            else:
                scale = og[key] / fg[key] if fg[key] else 1.0
                for g in groups:
                    g[key] = g[key] * scale
    kept = {p: opt.state[p] for g in groups for p in g['params'] if p in opt.state}
    opt.state.clear()
    opt.state.update(kept)
    opt.param_groups.clear()
    for g in groups:
        opt.add_param_group(g)
    ow = runner.optim_wrapper
    # OptimWrapper appends a settings pseudo-group when there are several groups
    if len(opt.param_groups) == 1:
        ow.base_param_settings = None
    elif getattr(ow, 'base_param_settings', None) is None:
        ow.base_param_settings = {'params': torch.tensor([0.0]), **opt.defaults}
    schedulers = runner.param_schedulers
    if isinstance(schedulers, dict):
        schedulers = [s for v in schedulers.values() for s in v]
    for s in schedulers or []:
        if not hasattr(s, 'base_values'):
            continue
        name = s.param_name
        all_groups = ow.param_groups
        for g in all_groups:
            g.setdefault(f'initial_{name}', g[name])
        s.base_values = [g[f'initial_{name}'] for g in all_groups]
        s._last_value = [g[name] for g in all_groups]
