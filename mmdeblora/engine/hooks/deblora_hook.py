"""DebLoRAHook: decides *when* the de-biasing stage starts, and checks everything first.

Before the first iteration (``before_run``) it checks every option, that the model
implements the de-biasing interface (``mmdeblora.models.DebiasModel``) on a
``LoRABackbone``, that the new adapter can be built, that some class will be calibrated,
and dry-runs the feature extraction on one batch (of the ``cluster_pool`` too). At the
start of epoch ``switch_epoch`` it saves the final stage-1 model (``stage1_final.pth``),
runs the runner-free de-biasing step (``mmdeblora.engine.debias.debias_model``), reports
it (log, visualizer scalars, ``work_dir/deblora/`` with an embedding plot), lets the model
enter its own stage 2 (``enter_debias_stage``) and keeps DDP and the optimizer in step
(``mmdeblora.engine.optim``; a stage-2 optimizer and schedule of its own when
``stage2_optim_wrapper`` / ``stage2_param_scheduler`` are given). At the end of every
stage-2 epoch it reports the target reach: the mean gaps of the epoch's training batches
(free: the stage-2 loss computes them), and at the last epoch (and every
``reach_interval``-th one) the exact measurement over the training set in eval mode
(``mmdeblora.engine.stage2.measure_reach``: the calibrated instances' gap to their targets
relative to the switch, the others' drift); to the log, the visualizer scalars and
``work_dir/deblora/reach.csv``, with a warning at the end when the gap has not shrunk.
With ``replay``, it appends tail-replay images (``mmdeblora.engine.replay``) to every
stage-2 batch before the step.

Checkpoints carry ``checkpoint['deblora']``. mmengine calls ``after_load_checkpoint``
before it loads the model's state dict and ``Runner.resume`` loads the optimizer after
that, so a stage-2 checkpoint first re-enters stage 2 here, then its weights and optimizer
state load into the new adapter and groups; nothing is re-clustered.
"""
import copy
import csv
import io
import math
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

from mmengine import dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop

from mmdeblora.deblora import DebiasState, Stage2Settings
from mmdeblora.deblora.settings import check_bool, check_keys, check_number
from mmdeblora.models.debias_mixin import DebiasModel
from mmdeblora.utils.atomic import atomic_path, atomic_write_text
from mmdeblora.visualization.embedding import METHODS
from ..debias import (DebiasSettings, build_extraction_loader, build_pool_loader, debias_model,
                      preflight, preflight_pool)
from ..debias_report import log_result, result_scalars, save_result
from ..optim import build_schedulers, follow_trainable_set, stage2_optim_cfg
from ..stage2 import hook_options, measure_reach, split_options  # noqa: F401 (public here too)

SUPPORTED = ('DebLoRAFasterRCNN (Oriented R-CNN), DebLoRACascadeRCNN (RoI Transformer) '
             'and DebLoRAImageClassifier (mmpretrain); one-stage detectors have no RoI '
             'features per instance and are not supported')
STAGE1_CKPT = 'stage1_final.pth'


REACH_FILE = 'reach.csv'
TRAIN_GAPS = ('deblora_cal_gap', 'deblora_other_gap')  # logged by the stage-2 loss
ROW_KEYS = ('epoch', 'stage2_epochs', 'num_cal', 'num_other')
NOT_SHRUNK = 0.9  # a final relative calibrated gap above this: "has not shrunk"


def check_stage2_optim(optim_wrapper, param_scheduler) -> None:
    """The stage-2 optimizer options' shape (their values are checked by a dry build)."""
    if optim_wrapper is not None:
        if not isinstance(optim_wrapper, dict) or not optim_wrapper:
            raise TypeError('DebLoRAHook.stage2_optim_wrapper must be a non-empty dict of '
                            "optim_wrapper keys, e.g. dict(optimizer=dict(type='AdamW', "
                            f'lr=1e-4)), got {optim_wrapper!r}')
        opt = optim_wrapper.get('optimizer')
        if opt is not None and not (isinstance(opt, dict) and 'type' in opt):
            raise TypeError('DebLoRAHook.stage2_optim_wrapper.optimizer must be a dict with '
                            f'a type, got {opt!r}')
    if param_scheduler is not None:
        items = [param_scheduler] if isinstance(param_scheduler, dict) else param_scheduler
        if not isinstance(items, (list, tuple)) or not all(
                isinstance(c, dict) and 'type' in c for c in items):
            raise TypeError('DebLoRAHook.stage2_param_scheduler must be a scheduler dict or '
                            f'a list of them, each with a type, got {param_scheduler!r}')


@HOOKS.register_module()
class DebLoRAHook(Hook):
    """Start debLoRA's de-biasing stage at ``switch_epoch`` (0-based).

    Args:
        switch_epoch: stage-1 epochs; stage 2 starts at this epoch.
        plot: 2-D embedding written to ``work_dir/deblora/embedding.png`` at the switch
            (``'pca'``, ``'tsne'`` or ``None``); ``plot_max_points`` instances drawn.
        save_switch_checkpoint: always save the final stage-1 model as
            ``stage1_final.pth``, whatever the checkpoint interval.
        stage2_optim_wrapper: stage 2's own optimizer: keys that replace the config's
            ``optim_wrapper`` keys (``optimizer`` as a whole; constructor,
            ``paramwise_cfg`` and clipping kept unless given), e.g.
            ``dict(optimizer=dict(type='AdamW', lr=1e-4))``. ``None``: the run's optimizer
            goes on over the new trainable set.
        stage2_param_scheduler: stage 2's schedulers (a dict or a list), counting epochs
            and iterations from the switch. ``None``: the run's schedulers go on, or a
            constant lr with ``stage2_optim_wrapper``.
        replay: tail replay (``mmdeblora.engine.replay``): this many training images that
            hold a calibrated instance are appended to every stage-2 batch, for the feature
            loss's calibrated mean only (no task loss on them, nothing held). 0 (default):
            off. Needs a new adapter (``mode`` ``feature_loss`` or ``both``) and a model
            data preprocessor without batch augments.
        reach_interval: measure the target reach over the training set (eval mode, two
            passes: about the cost of an epoch) every this many stage-2 epochs and at the
            last one; ``None`` (default): at the last one only; 0: never. The training
            batches' mean gaps are reported every stage-2 epoch whatever it is.
        **options: the de-biasing step's options (``DebiasSettings``: ``num_clusters``,
            ``kmeans``, ``weighting``, ``alpha_mode``, ``alpha``, ``alpha_max``,
            ``groups``, ``calibrate_groups``, ``pool``, ``normalize``, ``renormalize``,
            ``max_per_class``, ``cluster_pool``: unlabelled instances that join K-means,
            ...) and the model's stage 2 (``Stage2Settings``:
            ``mode``, ``adapter_name``, ``adapter_cfg``, ``stage1_adapters``,
            ``loss_weight``, ``hold_weight``, ``loss_normalize``, ``freeze_neck``,
            ``freeze_backbone_extra``, ...).
    """

    priority = 'NORMAL'

    def __init__(self, switch_epoch: int, plot: Optional[str] = 'pca',
                 plot_max_points: int = 3000, save_switch_checkpoint: bool = True,
                 stage2_optim_wrapper: Optional[dict] = None,
                 stage2_param_scheduler: Union[None, dict, Sequence[dict]] = None,
                 reach_interval: Optional[int] = None, replay: int = 0,
                 **options) -> None:
        check_number(switch_epoch, 'DebLoRAHook.switch_epoch', 0, integer=True)
        if plot is not None and plot not in METHODS:
            raise ValueError(f'DebLoRAHook.plot must be one of {METHODS} or None, got {plot!r}')
        check_number(plot_max_points, 'DebLoRAHook.plot_max_points', 1, integer=True)
        check_bool(save_switch_checkpoint, 'DebLoRAHook.save_switch_checkpoint')
        check_stage2_optim(stage2_optim_wrapper, stage2_param_scheduler)
        if reach_interval is not None:
            check_number(reach_interval, 'DebLoRAHook.reach_interval', 0, integer=True)
        self.stage2_optim_wrapper = copy.deepcopy(stage2_optim_wrapper)
        self.stage2_param_scheduler = copy.deepcopy(stage2_param_scheduler)
        self.reach_interval = reach_interval
        self.reach: List[dict] = []
        self._batch_gaps: Dict[str, List[float]] = {}
        check_keys(options, DebiasSettings.keys() + Stage2Settings.keys(), 'DebLoRAHook')
        self.settings, self.stage2 = split_options(options)
        check_number(replay, 'DebLoRAHook.replay', 0, integer=True)
        if replay and not self.stage2.new_adapter:
            raise ValueError(f'DebLoRAHook.replay={replay} feeds the feature loss, which '
                             f"mode={self.stage2.mode!r} does not have")
        self.replay, self._replay = replay, None
        self.switch_epoch, self.plot = switch_epoch, plot
        self.plot_max_points = plot_max_points
        self.save_switch_checkpoint = save_switch_checkpoint
        self.stage, self.state, self.switched_at = 1, None, None
        self._loader = self._pool_loader = None

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    # ------------------------------------------------------------------ checks
    def before_run(self, runner) -> None:
        model = self._model(runner)
        if not isinstance(model, DebiasModel):
            raise TypeError(f'DebLoRAHook cannot run on model.type '
                            f'{type(model).__name__}: it supports {SUPPORTED}. For '
                            "Oriented R-CNN set model.type='DebLoRAFasterRCNN'")
        model.debias_check(self.stage2, self.settings.pool)
        if self.replay and getattr(model.data_preprocessor, 'batch_augments', None):
            raise ValueError('DebLoRAHook.replay appends images to the training batch, so '
                             'model.data_preprocessor.batch_augments would mix them with '
                             'the batch\'s own: remove one of the two')
        if isinstance(getattr(runner, '_train_loop', None), BaseLoop):  # training only
            # the checks draw random numbers (the loader's base seed) before mmengine
            # initialises the weights: restored, so that a debLoRA run starts from the
            # same weights and data order as the LoRA run of its seed
            from .random_state_hook import capture_random_state, restore_random_state
            state = capture_random_state()
            try:
                self._loader = build_extraction_loader(runner.cfg, self.settings)
                preflight(model, self._loader, self.settings)
                self._pool_loader = build_pool_loader(runner.cfg, self.settings)
                if self._pool_loader is not None:
                    preflight_pool(model, self._pool_loader, self.settings)
                self._dry_build_stage2_optim(runner)
                if self.replay:
                    from ..replay import check_replay_source
                    check_replay_source(runner.train_dataloader.dataset)
            finally:
                restore_random_state(state)

    def _dry_build_stage2_optim(self, runner) -> None:
        """Build the stage-2 optimizer and schedulers once on the stage-1 model, so that a
        wrong type or argument fails now, not at the switch."""
        if self.stage2_optim_wrapper is None and self.stage2_param_scheduler is None:
            return
        from mmengine.optim import build_optim_wrapper
        key = 'stage2_optim_wrapper'
        try:
            wrapper = runner.optim_wrapper
            if self.stage2_optim_wrapper is not None:
                wrapper = build_optim_wrapper(runner.model, stage2_optim_cfg(
                    runner.cfg.optim_wrapper, self.stage2_optim_wrapper))
            if self.stage2_param_scheduler is not None:
                key = 'stage2_param_scheduler'
                build_schedulers(runner, wrapper, self.stage2_param_scheduler)
        except Exception as e:
            raise ValueError(f'DebLoRAHook.{key} cannot be built ({type(e).__name__}: '
                             f'{e})') from e

    def before_train(self, runner) -> None:
        if self.stage == 1 and self.switch_epoch >= runner.max_epochs:
            runner.logger.warning(f'DebLoRAHook: switch_epoch={self.switch_epoch} >= '
                                  f'max_epochs={runner.max_epochs}: no debLoRA stage')

    # ------------------------------------------------------------------ schedule
    def before_train_epoch(self, runner) -> None:
        if self.stage == 1 and runner.epoch >= self.switch_epoch:
            self.switch(runner)

    def switch(self, runner) -> None:
        """Save stage 1, de-bias, report, and enter stage 2 (all ranks)."""
        runner.logger.info(f'DebLoRAHook: end of stage 1 at epoch {runner.epoch}')
        if self.save_switch_checkpoint:
            self._save_stage1(runner)
        loader = self._loader or build_extraction_loader(runner.cfg, self.settings)
        pool = self._pool_loader or build_pool_loader(runner.cfg, self.settings)
        result = debias_model(self._model(runner), loader, self.settings,
                              log_fn=runner.logger.info, pool_loader=pool)
        self._loader = self._pool_loader = None
        self.switched_at = runner.epoch
        log_result(result, runner.logger.info, runner.logger.warning)
        runner.visualizer.add_scalars(result_scalars(result), step=runner.iter)
        if dist.is_main_process():
            out = osp.join(runner.work_dir, 'deblora')
            save_result(result, out, self.plot, self.plot_max_points)
            runner.logger.info(f'DebLoRAHook: state, tables and plot written to {out}')
        self.enter_stage2(runner, result.state)

    def _save_stage1(self, runner) -> None:
        path = osp.join(runner.work_dir, STAGE1_CKPT)
        if runner._resume and osp.abspath(str(runner._load_from)) == osp.abspath(path):
            return  # resumed from it: same model, keep the file as it is
        if not dist.is_main_process():
            return  # Runner.save_checkpoint is master-only
        # a temporary name, renamed into place (whatever the runner): a full disk keeps the
        # previous file, a symlink at either path is replaced, not written through
        with atomic_path(path, fsync=True) as tmp:
            runner.save_checkpoint(runner.work_dir, osp.basename(tmp),
                                   meta=dict(epoch=runner.epoch, iter=runner.iter))
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), path)
        runner.logger.info(f'DebLoRAHook: final stage-1 model saved to {path}')

    def enter_stage2(self, runner, state: DebiasState) -> None:
        """The model enters its stage 2; DDP and the optimizer follow (idempotent)."""
        model = self._model(runner)
        model.enter_debias_stage(state, self.stage2)
        follow_trainable_set(runner, self.stage2_optim_wrapper, self.stage2_param_scheduler)
        self.stage, self.state = 2, state
        if self.replay and self._replay is None and \
                isinstance(getattr(runner, '_train_loop', None), BaseLoop):
            from ..replay import TailReplay
            loader = runner.train_dataloader
            self._replay = TailReplay(loader.dataset, state.calibrated.tolist(),
                                      self.replay, loader.collate_fn,
                                      seed=(runner.seed or 0) + dist.get_rank())
            runner.logger.info(f'DebLoRAHook: tail replay, {self.replay} of '
                               f'{len(self._replay.indices)} training images with a '
                               'calibrated instance added to every stage-2 batch')
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        runner.logger.info(f'DebLoRAHook: stage 2, adapters '
                           f'{model.backbone.active_adapters} active, {n} trainable '
                           'parameters')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.stage == 2 and self._replay is not None:
            self._replay.extend(data_batch)

    # ------------------------------------------------------------------ target reach
    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        for key in TRAIN_GAPS:
            if self.stage == 2 and outputs and key in outputs:
                self._batch_gaps.setdefault(key, []).append(float(outputs[key]))

    def after_train_epoch(self, runner) -> None:
        if self.stage != 2 or self.switched_at is None or not self.stage2.new_adapter:
            return  # augment alone pulls no feature: nothing to reach
        done = runner.epoch + 1 - self.switched_at  # stage-2 epochs completed
        last = runner.epoch + 1 >= runner.max_epochs
        row = dict(epoch=runner.epoch + 1, stage2_epochs=done)
        for key, vals in self._batch_gaps.items():
            row[f'train_{key}'] = sum(vals) / len(vals) if vals else math.nan
        self._batch_gaps = {}
        every = self.reach_interval
        if every != 0 and (last or (every is not None and done % every == 0)):
            runner.logger.info('DebLoRAHook: measuring the target reach on the training set')
            self._loader = self._loader or build_extraction_loader(runner.cfg, self.settings)
            row.update(measure_reach(self._model(runner), self._loader))
        self.reach = [r for r in self.reach if r['epoch'] != row['epoch']] + [row]
        msg = (f'DebLoRAHook: stage-2 epoch {done}: training batches\' mean gap of the '
               f"calibrated instances {row.get('train_deblora_cal_gap', math.nan):.3f} s, "
               f"others' drift {row.get('train_deblora_other_gap', math.nan):.4f} s")
        if 'cal_gap' in row:
            msg += (f"; over the training set: calibrated gap {row['cal_gap']:.3f} of its "
                    f"value at the switch ({row['num_cal']} instances), others' drift "
                    f"{row['other_drift']:.4f} s ({row['num_other']})")
        runner.logger.info(msg)
        runner.visualizer.add_scalars(
            {f'deblora/reach_{k}': v for k, v in row.items() if k not in ROW_KEYS},
            step=runner.iter)
        if dist.is_main_process():
            self._write_reach(osp.join(runner.work_dir, 'deblora'))
        if last and 'cal_gap' in row and not row['cal_gap'] <= NOT_SHRUNK:
            runner.logger.warning(
                f"DebLoRAHook: at the end of stage 2 the calibrated instances are still "
                f"{row['cal_gap']:.3f} of their gap at the switch away from their targets "
                f'(not shrunk below {NOT_SHRUNK}): stage 2 did not train the de-biased '
                'features. Try stage2_optim_wrapper (e.g. AdamW), a larger loss_weight or '
                'more stage-2 epochs (docs/deblora.md)')

    def _write_reach(self, out: str) -> None:
        buf = io.StringIO()
        names = list(dict.fromkeys(k for r in self.reach for k in r))
        writer = csv.DictWriter(buf, fieldnames=names, restval='')
        writer.writeheader()
        for r in self.reach:
            writer.writerow({k: (f'{v:.6g}' if isinstance(v, float) and math.isfinite(v)
                                 else v) for k, v in r.items()})
        atomic_write_text(osp.join(out, REACH_FILE), buf.getvalue())

    # ------------------------------------------------------------------ checkpoints
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['deblora'] = dict(
            stage=self.stage, switched_at=self.switched_at,
            state=None if self.state is None else self.state.to_dict(),
            reach=[dict(r) for r in self.reach])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        info = checkpoint.get('deblora')
        if not info or info.get('stage', 1) != 2:
            return
        self.switched_at = info.get('switched_at')
        self.reach = [dict(r) for r in info.get('reach', [])]
        runner.logger.info('DebLoRAHook: stage-2 checkpoint, re-entering stage 2 without '
                           're-clustering')
        self.enter_stage2(runner, DebiasState.from_dict(info['state']))
