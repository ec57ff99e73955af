"""Keeping the runner's optimizer and DDP wrapper in step when the trainable set changes.

debLoRA's stage switch adds an adapter and freezes others mid-run. DDP registers the
parameters that need a gradient when it is built, and the optimizer holds its parameter
groups, so both follow the model's new trainable set here. By default the param schedulers
go on (``regroup_optimizer``); a stage-2 optimizer and schedule of their own
(``DebLoRAHook.stage2_optim_wrapper`` / ``stage2_param_scheduler``) replace the runner's
(``use_stage2_optimizer``).
"""
import copy
from typing import List, Optional, Sequence, Union

import torch
from mmengine import dist
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, build_optim_wrapper


def rewrap_model(runner) -> None:
    """Wrap the model again under DDP, with the config's ``model_wrapper_cfg``.

    A no-op when not distributed (the runner then holds the bare model).
    """
    if not is_model_wrapper(runner.model) or dist.get_world_size() == 1:
        return
    runner.model = runner.wrap_model(runner.cfg.get('model_wrapper_cfg'),
                                     runner.model.module)


def follow_trainable_set(runner, optim_wrapper: Optional[dict] = None,
                         param_scheduler: Union[None, dict, Sequence[dict]] = None) -> None:
    """Re-wrap under DDP, then regroup the optimizer after the trainable set changed, or
    replace it (and the schedulers) by the stage-2 ones when they are given."""
    rewrap_model(runner)
    if optim_wrapper is not None:
        use_stage2_optimizer(runner, optim_wrapper, param_scheduler)
    elif isinstance(runner.optim_wrapper, OptimWrapper):
        regroup_optimizer(runner)
        if param_scheduler is not None:
            runner.param_schedulers = build_schedulers(runner, runner.optim_wrapper,
                                                       param_scheduler)


def stage2_optim_cfg(base: dict, override: dict) -> dict:
    """The config's ``optim_wrapper`` with the stage-2 changes: each key of ``override``
    (``optimizer`` as a whole, ``clip_grad``, ``type``, ...) replaces the config's; the
    rest (constructor, ``paramwise_cfg``, clipping) is kept."""
    cfg = copy.deepcopy(dict(base))
    cfg.update(copy.deepcopy(dict(override)))
    return cfg


def build_schedulers(runner, optim_wrapper: OptimWrapper,
                     param_scheduler: Union[dict, Sequence[dict]]) -> List:
    """Param schedulers on ``optim_wrapper``, counting from now (stage 2's epoch 0)."""
    from mmengine.registry import PARAM_SCHEDULERS
    cfgs = [param_scheduler] if isinstance(param_scheduler, dict) else list(param_scheduler)
    return [PARAM_SCHEDULERS.build(copy.deepcopy(dict(c)), default_args=dict(
        optimizer=optim_wrapper, epoch_length=len(runner.train_dataloader))) for c in cfgs]


def trainable_only(optim_wrapper: OptimWrapper) -> OptimWrapper:
    """Drop the parameters that need no gradient from the wrapper's groups (in place)."""
    opt = optim_wrapper.optimizer
    groups = [dict(g, params=[p for p in g['params'] if p.requires_grad])
              for g in opt.param_groups]
    groups = [g for g in groups if g['params']]
    if not groups:
        raise RuntimeError('no trainable parameter left after the change of the trainable set')
    opt.param_groups.clear()
    opt.state.clear()
    for g in groups:
        opt.add_param_group(g)
    return optim_wrapper


def use_stage2_optimizer(runner, optim_wrapper: dict,
                         param_scheduler: Union[None, dict, Sequence[dict]] = None) -> None:
    """Replace the runner's optimizer wrapper by one built from the config's with the
    stage-2 changes (its constructor and ``paramwise_cfg``, ``auto_scale_lr`` applied), over
    the trainable parameters; the schedulers by ``param_scheduler`` (none: a constant lr).
    A resume from a stage-2 checkpoint calls this before the optimizer and scheduler states
    load, so they load into these."""
    cfg = stage2_optim_cfg(runner.cfg.optim_wrapper, optim_wrapper)
    wrapper = trainable_only(build_optim_wrapper(runner.model, cfg))
    schedulers, runner.param_schedulers = runner.param_schedulers, None
    try:  # the runner's own scaling; it refuses to run once schedulers exist
        runner.scale_lr(wrapper, runner.auto_scale_lr)
    finally:
        runner.param_schedulers = schedulers
    runner.optim_wrapper = wrapper
    runner.param_schedulers = (build_schedulers(runner, wrapper, param_scheduler)
                               if param_scheduler is not None else [])


def regroup_optimizer(runner) -> None:
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
        raise RuntimeError('no trainable parameter left after the change of the trainable set')
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
