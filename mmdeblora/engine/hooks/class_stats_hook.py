"""Hand the training set's class counts and groups to the modules that asked for them."""
from typing import Dict, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from mmdeblora.datasets.class_groups import GroupSpec, check_group_spec
from mmdeblora.datasets.class_stats import ClassStats, load_or_compute_class_stats


@HOOKS.register_module()
class ClassStatsHook(Hook):
    """Count training instances per class before training; push them into the model.

    Losses and heads built with ``class_counts='auto'`` cannot know the counts at build
    time (the model is built before the dataloader). Before the first iteration this
    hook computes them from ``runner.train_dataloader.dataset`` (the real dataset,
    after ``filter_cfg``, without ignored instances), writes ``class_stats.json`` to the
    work dir (main process; reused when its fingerprint matches) and calls, on every
    sub-module of the model that has them, ``set_class_counts(counts)`` and
    ``set_class_groups(group_indices)`` (``{'head': [class indices], ...}``).

    Args:
        groups: ``'auto'`` (from the counts' shares, see ``groups_from_counts``),
            ``'dota'`` or a dict of class names (``mmdeblora.datasets.resolve_groups``).
        group_thresholds: shares for ``groups_from_counts``.
    """

    priority = 'VERY_HIGH'  # before anything that might run a training step

    def __init__(self, groups: GroupSpec = 'auto',
                 group_thresholds: Optional[Dict[str, float]] = None) -> None:
        check_group_spec(groups)
        self.groups = groups
        self.group_thresholds = group_thresholds
        self.stats: Optional[ClassStats] = None

    def before_train(self, runner) -> None:
        dataset = runner.train_dataloader.dataset
        self.stats = load_or_compute_class_stats(
            dataset, runner.work_dir, self.groups, self.group_thresholds,
            write=is_main_process())
        counts, group_idx = self.stats.counts, self.stats.group_indices()
        model = getattr(runner.model, 'module', runner.model)  # unwrap DDP
        receivers = []
        for name, module in model.named_modules():
            if hasattr(module, 'set_class_counts'):
                module.set_class_counts(counts)
                receivers.append(name)
            if hasattr(module, 'set_class_groups'):
                module.set_class_groups(group_idx)
                receivers.append(name)
        runner.logger.info(
            f'ClassStatsHook: {sum(counts)} training instances in '
            f'{self.stats.num_images} images, per class '
            f'{self.stats.counts_dict()}; groups {self.stats.groups}; '
            f'given to {sorted(set(receivers)) or "no module"}')
