"""DebLoRAHook: decides *when* the de-biasing stage starts, and checks everything first.

Before the first iteration (``before_run``) it checks every option, that the model
implements the de-biasing interface (``mmdeblora.models.DebiasModel``) on a
``LoRABackbone``, that the new adapter can be built, that some class will be calibrated,
and dry-runs the feature extraction on one batch. At the start of epoch ``switch_epoch``
it saves the final stage-1 model (``stage1_final.pth``), runs the runner-free
de-biasing step (``mmdeblora.engine.debias.debias_model``), reports it (log, visualizer
scalars, ``work_dir/deblora/`` with an embedding plot), lets the model enter its own stage
2 (``enter_debias_stage``) and keeps DDP and the optimizer in step
(``mmdeblora.engine.optim``).

Checkpoints carry ``checkpoint['deblora']``. mmengine calls ``after_load_checkpoint``
before it loads the model's state dict and ``Runner.resume`` loads the optimizer after
that, so a stage-2 checkpoint first re-enters stage 2 here, then its weights and optimizer
state load into the new adapter and groups; nothing is re-clustered.
"""
import os
import os.path as osp
from typing import Optional, Tuple

from mmengine import dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop

from mmdeblora.deblora import DebiasState, Stage2Settings
from mmdeblora.deblora.settings import check_bool, check_keys, check_number
from mmdeblora.models.debias_mixin import DebiasModel
from mmdeblora.visualization.embedding import METHODS
from ..debias import DebiasSettings, build_extraction_loader, debias_model, preflight
from ..debias_report import log_result, result_scalars, save_result
from ..optim import follow_trainable_set

SUPPORTED = ('DebLoRAFasterRCNN (Oriented R-CNN), DebLoRACascadeRCNN (RoI Transformer) '
             'and DebLoRAImageClassifier (mmpretrain); one-stage detectors have no RoI '
             'features per instance and are not supported')
STAGE1_CKPT = 'stage1_final.pth'


def hook_options(cfg) -> dict:
    """The de-biasing and stage-2 options of a config's DebLoRAHook (``{}`` without one),
    for the tools that run the same step outside the runner."""
    hooks = [h for h in cfg.get('custom_hooks', []) if h.get('type') == 'DebLoRAHook']
    opts = dict(hooks[0]) if hooks else {}
    for key in ('type', 'switch_epoch', 'plot', 'plot_max_points', 'save_switch_checkpoint'):
        opts.pop(key, None)
    return opts


def split_options(options: dict) -> Tuple[DebiasSettings, Stage2Settings]:
    """DebLoRAHook options -> the de-biasing step's settings and the stage-2 settings
    (each checked on creation); what neither knows is left out."""
    return (DebiasSettings(**{k: options[k] for k in DebiasSettings.keys() if k in options}),
            Stage2Settings(**{k: options[k] for k in Stage2Settings.keys() if k in options}))


@HOOKS.register_module()
class DebLoRAHook(Hook):
    """Start debLoRA's de-biasing stage at ``switch_epoch`` (0-based).

    Args:
        switch_epoch: stage-1 epochs; stage 2 starts at this epoch.
        plot: 2-D embedding written to ``work_dir/deblora/embedding.png`` at the switch
            (``'pca'``, ``'tsne'`` or ``None``); ``plot_max_points`` instances drawn.
        save_switch_checkpoint: always save the final stage-1 model as
            ``stage1_final.pth``, whatever the checkpoint interval.
        **options: the de-biasing step's options (``DebiasSettings``: ``num_clusters``,
            ``kmeans``, ``weighting``, ``alpha_mode``, ``alpha``, ``alpha_max``,
            ``groups``, ``calibrate_groups``, ``pool``, ``normalize``, ``renormalize``,
            ``max_per_class``, ...) and the model's stage 2 (``Stage2Settings``:
            ``adapter_name``, ``adapter_cfg``, ``stage1_adapters``, ``loss_weight``,
            ``loss_normalize``, ``freeze_neck``, ``freeze_backbone_extra``).
    """

    priority = 'NORMAL'

    def __init__(self, switch_epoch: int, plot: Optional[str] = 'pca',
                 plot_max_points: int = 3000, save_switch_checkpoint: bool = True,
                 **options) -> None:
        check_number(switch_epoch, 'DebLoRAHook.switch_epoch', 0, integer=True)
        if plot is not None and plot not in METHODS:
            raise ValueError(f'DebLoRAHook.plot must be one of {METHODS} or None, got {plot!r}')
        check_number(plot_max_points, 'DebLoRAHook.plot_max_points', 1, integer=True)
        check_bool(save_switch_checkpoint, 'DebLoRAHook.save_switch_checkpoint')
        check_keys(options, DebiasSettings.keys() + Stage2Settings.keys(), 'DebLoRAHook')
        self.settings, self.stage2 = split_options(options)
        self.switch_epoch, self.plot = switch_epoch, plot
        self.plot_max_points = plot_max_points
        self.save_switch_checkpoint = save_switch_checkpoint
        self.stage, self.state, self.switched_at = 1, None, None
        self._loader = None

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
        model.debias_check(self.stage2)
        if isinstance(getattr(runner, '_train_loop', None), BaseLoop):  # training only
            self._loader = build_extraction_loader(runner.cfg, self.settings)
            preflight(model, self._loader, self.settings)

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
        result = debias_model(self._model(runner), loader, self.settings,
                              log_fn=runner.logger.info)
        self._loader, self.switched_at = None, runner.epoch
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
        tmp = '.' + STAGE1_CKPT + '.tmp'
        runner.save_checkpoint(runner.work_dir, tmp,
                               meta=dict(epoch=runner.epoch, iter=runner.iter))
        if dist.is_main_process():
            os.replace(osp.join(runner.work_dir, tmp), path)
            with open(osp.join(runner.work_dir, 'last_checkpoint'), 'w') as f:
                f.write(path)
            runner.logger.info(f'DebLoRAHook: final stage-1 model saved to {path}')

    def enter_stage2(self, runner, state: DebiasState) -> None:
        """The model enters its stage 2; DDP and the optimizer follow (idempotent)."""
        model = self._model(runner)
        model.enter_debias_stage(state, self.stage2)
        follow_trainable_set(runner)
        self.stage, self.state = 2, state
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        runner.logger.info(f'DebLoRAHook: stage 2, adapters '
                           f'{model.backbone.active_adapters} active, {n} trainable '
                           'parameters')

    # ------------------------------------------------------------------ checkpoints
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['deblora'] = dict(
            stage=self.stage, switched_at=self.switched_at,
            state=None if self.state is None else self.state.to_dict())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        info = checkpoint.get('deblora')
        if not info or info.get('stage', 1) != 2:
            return
        self.switched_at = info.get('switched_at')
        runner.logger.info('DebLoRAHook: stage-2 checkpoint, re-entering stage 2 without '
                           're-clustering')
        self.enter_stage2(runner, DebiasState.from_dict(info['state']))
