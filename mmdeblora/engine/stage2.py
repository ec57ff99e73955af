"""Stage 2 outside the runner: settings from a config, a de-biasing model from a
checkpoint, and how far stage 2 has moved the features toward their targets.

``DebLoRAHook``, ``tools/`` and ``benchmarks/`` all use these, so that "read the hook's
options", "load a checkpoint and re-enter stage 2" and "measure the target reach" are
written once.
"""
import os.path as osp
from typing import Optional, Sequence, Tuple, Union

import torch
from mmengine.registry import DefaultScope

from mmdeblora.deblora import DebiasState, Stage2Settings
from .debias import DebiasSettings, eval_batches, gather_cat

HOOK_ONLY = ('type', 'switch_epoch', 'plot', 'plot_max_points', 'save_switch_checkpoint',
             'stage2_optim_wrapper', 'stage2_param_scheduler', 'reach_interval')


def hook_options(cfg) -> dict:
    """The de-biasing and stage-2 options of a config's DebLoRAHook (``{}`` without one),
    for the tools that run the same step outside the runner."""
    hooks = [h for h in cfg.get('custom_hooks', []) if h.get('type') == 'DebLoRAHook']
    opts = dict(hooks[0]) if hooks else {}
    for key in HOOK_ONLY:
        opts.pop(key, None)
    return opts


def split_options(options: dict) -> Tuple[DebiasSettings, Stage2Settings]:
    """DebLoRAHook options -> the de-biasing step's settings and the stage-2 settings
    (each checked on creation); what neither knows is left out."""
    return (DebiasSettings(**{k: options[k] for k in DebiasSettings.keys() if k in options}),
            Stage2Settings(**{k: options[k] for k in Stage2Settings.keys() if k in options}))


def settings_from_config(cfg, **overrides) -> Tuple[DebiasSettings, Stage2Settings]:
    """The settings a config's DebLoRAHook would use (defaults without one); ``overrides``
    replace single options (e.g. ``loss_weight=0``), checked like the config's."""
    return split_options({**hook_options(cfg), **overrides})


def build_model(cfg):
    """The config's model in its default scope, as mmengine's Runner builds it."""
    from mmengine.registry import MODELS
    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor'):
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmrotate')):
        return MODELS.build(model_cfg)


def load_debias_model(cfg, checkpoint: str,
                      state: Union[None, str, DebiasState] = None,
                      stage2: Optional[Stage2Settings] = None):
    """A model of ``cfg`` with ``checkpoint``'s weights, in stage 2 where there is one.

    A stage-2 checkpoint (``checkpoint['deblora']``, written by DebLoRAHook) re-enters
    stage 2 before its weights load, as a resume does; a stage-1 checkpoint with ``state``
    (a ``DebiasState`` or the folder of ``deblora_state.json/npz``) enters stage 2 after
    its weights load, as the switch does. Without either the model stays in stage 1.
    ``stage2``: the settings (default: the config's). Weights load strictly, weights-only.
    """
    from mmdeblora.utils.checkpoint import load_checkpoint_file
    from mmdeblora.utils.checkpoint_fit import CheckpointMismatchError, checkpoint_fit
    stage2 = stage2 or settings_from_config(cfg)[1]
    model = build_model(cfg)
    ckpt = load_checkpoint_file(checkpoint)
    info = ckpt.get('deblora') if isinstance(ckpt, dict) else None
    in_stage2 = bool(info) and info.get('stage', 1) == 2
    if in_stage2:
        if state is not None:
            raise ValueError(f'{checkpoint} is a stage-2 checkpoint with its own state; '
                             'do not pass another one')
        model.enter_debias_stage(DebiasState.from_dict(info['state']), stage2)
    weights = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
    meta = (ckpt.get('meta') or {}) if isinstance(ckpt, dict) else {}
    omitted = meta.get('omitted_keys', ())
    early = checkpoint_fit(model, weights, omitted=omitted)  # before torch's bare size error
    if early.mismatched:
        raise CheckpointMismatchError(f'{checkpoint} does not fit the model of the config: '
                                      f'{early.summary()}')
    model.load_state_dict(weights, strict=False)  # checked below, after the adapters exist
    fit = checkpoint_fit(model, weights, omitted=omitted)
    if not fit.fits:
        raise CheckpointMismatchError(f'{checkpoint} does not fit the model of the config: '
                                      f'{fit.summary()}')
    if state is not None:
        if isinstance(state, str):
            if not osp.isfile(osp.join(state, 'deblora_state.json')):
                raise FileNotFoundError(f'{state} holds no deblora_state.json (the switch '
                                        'writes it to <work_dir>/deblora)')
            state = DebiasState.load(state)
        model.enter_debias_stage(state, stage2)
    return model


@torch.no_grad()
def measure_reach(model, data_loader, progress: bool = True) -> dict:
    """How far stage 2 has moved the training instances, model in eval mode.

    For every instance the loader yields: its stage-1 feature z_1, its target z_hat and
    its current feature z. Returns (each over all ranks):

    - ``cal_gap``: mean ||z - z_hat||^2 of the calibrated instances relative to its value
      at the switch, mean ||z_1 - z_hat||^2 (1 at the switch; the goal is to shrink it);
    - ``cal_gap_s`` and ``other_drift``: mean ||z - z_hat||^2 of the calibrated ones and
      mean ||z - z_1||^2 of the others, in units of the loss scale s;
    - ``num_cal`` / ``num_other``: the instances counted.
    """
    plan = model.debias_plan
    if plan is None:
        raise RuntimeError('measure_reach needs a model in the de-biasing stage')
    now, start, cal = [], [], []
    for data in eval_batches(model, data_loader, progress):
        z1, targets = model.debias_targets(data['inputs'], data['data_samples'])
        z, labels = model.instance_features(data['inputs'], data['data_samples'])
        is_cal = plan.instance_calibrated(labels)
        now.append(torch.where(is_cal, ((z - targets) ** 2).sum(1),
                               ((z - z1) ** 2).sum(1)).double().cpu())
        start.append(((z1 - targets) ** 2).sum(1).double().cpu())
        cal.append(is_cal.cpu())
    now, start, cal = (gather_cat(torch.cat(x)) for x in (now, start, cal))
    cal = cal.bool()
    s = plan.loss_scale

    def mean(x: torch.Tensor) -> float:
        return float(x.mean()) if x.numel() else float('nan')

    start_gap = mean(start[cal])
    return dict(cal_gap=mean(now[cal]) / start_gap if start_gap > 0 else float('nan'),
                cal_gap_s=mean(now[cal]) / s, other_drift=mean(now[~cal]) / s,
                num_cal=int(cal.sum()), num_other=int((~cal).sum()))


def stage2_parameters(model, adapter: Optional[str] = None) -> Sequence[torch.nn.Parameter]:
    """The trainable parameters of the stage-2 adapter (default: the plan's)."""
    name = adapter or model.debias_plan.adapter
    params = [p for n, p in model.named_parameters() if p.requires_grad and f'.{name}' in n]
    if not params:
        raise RuntimeError(f'no trainable parameter of adapter {name!r}')
    return params
