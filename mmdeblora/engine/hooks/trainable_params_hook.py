"""Log what a run trains: the "trainable parameters" column of the paper's tables."""
import json
import os.path as osp
from typing import Dict

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from mmdeblora.utils.atomic import atomic_open


def trainable_params(model) -> Dict[str, int]:
    """Trainable / total parameter counts, overall and per top-level module."""
    out = dict(trainable=0, total=0)
    for name, p in model.named_parameters():
        top = name.split('.')[0]
        out['total'] += p.numel()
        if p.requires_grad:
            out['trainable'] += p.numel()
            out[f'trainable.{top}'] = out.get(f'trainable.{top}', 0) + p.numel()
    return out


@HOOKS.register_module()  # mmengine's root registry: visible from every scope
class TrainableParamsHook(Hook):
    """Before training, log the trainable parameter counts and write them to
    ``<work_dir>/trainable_params.json``, so a results table reads them from the run."""

    priority = 'LOWEST'  # after hooks that change the trainable set at start

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        counts = trainable_params(model)
        parts = ', '.join(f'{k.split(".", 1)[1]} {v:,}' for k, v in counts.items()
                          if k.startswith('trainable.'))
        runner.logger.info(f"trainable parameters: {counts['trainable']:,} of "
                           f"{counts['total']:,} ({parts})")
        if runner.rank == 0:
            with atomic_open(osp.join(runner.work_dir, 'trainable_params.json')) as fh:
                json.dump(counts, fh, indent=2)
