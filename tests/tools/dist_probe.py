"""A hook for the distributed tests, imported by the training processes through
``custom_imports``: every rank writes what its model looks like right after the debLoRA
switch and at the end of training, so that the test can compare the ranks."""
import os.path as osp

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankStateProbe(Hook):
    """Save ``state_dict`` (+ the debLoRA state) of this rank as
    ``work_dir/probe/rank{R}_{epoch|end}.pth``: at the start of each stage-2 epoch (after
    DebLoRAHook, priority LOW) and after training."""

    priority = 'LOW'

    def _save(self, runner, tag: str) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        hook = next(h for h in runner.hooks if type(h).__name__ == 'DebLoRAHook')
        state = None if hook.state is None else hook.state.to_dict()
        path = osp.join(runner.work_dir, 'probe', f'rank{runner.rank}_{tag}.pth')
        torch.save(dict(state_dict=model.state_dict(), deblora=state,
                        wrapped=type(runner.model).__name__), path)

    def before_train(self, runner) -> None:
        import os
        os.makedirs(osp.join(runner.work_dir, 'probe'), exist_ok=True)

    def before_train_epoch(self, runner) -> None:
        hook = next(h for h in runner.hooks if type(h).__name__ == 'DebLoRAHook')
        if hook.stage == 2:
            self._save(runner, f'epoch{runner.epoch + 1}')

    def after_train(self, runner) -> None:
        self._save(runner, 'end')
