"""DivergenceHook: stop a diverging run before it writes a bad checkpoint.

mmengine trains on through a NaN loss: the weights become NaN, ``CheckpointHook`` saves them
and ``max_keep_ckpts`` deletes the last good checkpoints to make room. This hook runs
before ``CheckpointHook`` (priority ``ABOVE_NORMAL`` vs ``VERY_LOW``) after every iteration
and raises :class:`DivergenceError` as soon as the loss (or the gradient norm mmengine
measures when ``clip_grad`` is set) is not finite, or, when asked, above a bound. As a last
guard it refuses to save a checkpoint whose weights hold NaN or inf.

``CheckedRunner`` adds it to every run (config key ``divergence_guard``), so configs and
users need not list it in ``custom_hooks``, which a child config would replace.
"""
import math
import os.path as osp
from typing import Optional

import torch
from mmengine import dist
from mmengine.hooks import Hook
from mmengine.optim import AmpOptimWrapper
from mmengine.registry import HOOKS


class DivergenceError(RuntimeError):
    """Training diverged; the message says where, why and what was kept."""


def _check_bound(value: Optional[float], name: str) -> None:
    if value is not None and not (isinstance(value, (int, float)) and value > 0):
        raise ValueError(f'DivergenceHook.{name} must be a positive number or None, got '
                         f'{value!r}')


@HOOKS.register_module()
class DivergenceHook(Hook):
    """Stop training on a non-finite loss, and optionally on an exploding one.

    Args:
        max_loss: stop when the total loss exceeds this (``None``: only non-finite).
        max_grad_norm: stop when the gradient norm exceeds this; needs
            ``optim_wrapper.clip_grad`` (mmengine measures the norm there; a large
            ``max_norm`` clips nothing).
        check_checkpoint: refuse to save a checkpoint with non-finite weights.
    """

    priority = 'ABOVE_NORMAL'  # after RuntimeInfoHook, before LoggerHook and CheckpointHook

    def __init__(self, max_loss: Optional[float] = None,
                 max_grad_norm: Optional[float] = None,
                 check_checkpoint: bool = True) -> None:
        _check_bound(max_loss, 'max_loss')
        _check_bound(max_grad_norm, 'max_grad_norm')
        self.max_loss, self.max_grad_norm = max_loss, max_grad_norm
        self.check_checkpoint = bool(check_checkpoint)

    def before_train(self, runner) -> None:
        wrapper = runner.optim_wrapper
        if self.max_grad_norm is not None and not getattr(wrapper, 'clip_grad_kwargs', None):
            raise ValueError(
                'DivergenceHook.max_grad_norm needs optim_wrapper.clip_grad (mmengine '
                'measures the gradient norm there), e.g. clip_grad=dict(max_norm=1e9)')

    def _grad_norm(self, runner) -> Optional[float]:
        wrapper = runner.optim_wrapper
        if getattr(wrapper, 'clip_grad_kwargs', None) is None or \
                'train/grad_norm' not in runner.message_hub.log_scalars:
            return None
        return float(runner.message_hub.get_scalar('train/grad_norm').current())

    def _problem(self, runner, outputs: dict) -> Optional[str]:
        loss = outputs.get('loss') if outputs else None
        if loss is not None:
            loss = float(loss.detach() if hasattr(loss, 'detach') else loss)
        if loss is not None and not math.isfinite(loss):
            return f'the loss is {loss}'
        norm = self._grad_norm(runner)
        # with AMP a non-finite gradient is normal: the loss scaler skips that step
        if norm is not None and not math.isfinite(norm) and \
                not isinstance(runner.optim_wrapper, AmpOptimWrapper):
            return f'the gradient norm is {norm} (the weights are no longer finite)'
        if self.max_loss is not None and loss is not None and loss > self.max_loss:
            return f'the loss {loss:.4g} exceeds max_loss={self.max_loss:g}'
        if self.max_grad_norm is not None and norm is not None and norm > self.max_grad_norm:
            return f'the gradient norm {norm:.4g} exceeds max_grad_norm={self.max_grad_norm:g}'
        return None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        problem = self._problem(runner, outputs)
        if dist.get_world_size() > 1:  # every rank stops, or none: no rank left waiting
            flag = torch.tensor([0.0 if problem is None else 1.0])
            dist.all_reduce(flag)
            if problem is None and flag.item() > 0:
                problem = 'another rank diverged'
        if problem is None:
            return
        losses = ', '.join(f'{k}={float(v):.4g}' for k, v in (outputs or {}).items())
        self._stop(runner, f'{problem} at epoch {runner.epoch + 1}, iteration '
                           f'{batch_idx + 1} (iteration {runner.iter + 1} of the run; {losses})')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.check_checkpoint:
            return
        bad = [k for k, v in checkpoint.get('state_dict', {}).items()
               if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            self._stop(runner, f'{len(bad)} weight tensor(s) are not finite '
                               f'({", ".join(bad[:3])}{", ..." if len(bad) > 3 else ""}) '
                               f'when saving at iteration {runner.iter}')

    def _stop(self, runner, what: str) -> None:
        last = osp.join(runner.work_dir, 'last_checkpoint')
        kept = open(last).read().strip() if osp.isfile(last) else None
        msg = (f'DivergenceHook: training diverged: {what}. Stopped before saving anything '
               'for it; ' + (f'the last checkpoint, {kept}, is kept' if kept else
                             'no checkpoint had been saved yet') +
               '. Lower the learning rate (optim_wrapper.optimizer.lr), check the data, or '
               'resume from the last checkpoint. Bounds: divergence_guard=dict(max_loss=..., '
               'max_grad_norm=...); switch the guard off with divergence_guard=None.')
        runner.logger.error(msg)
        raise DivergenceError(msg)
