"""Macro-F1 per head / middle / tail group: the score of the seed paper's tables."""
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from mmpretrain.evaluation import SingleLabelMetric
from mmpretrain.registry import METRICS

from mmdeblora.datasets.class_groups import GROUP_NAMES, GroupSpec, check_group_spec, resolve_groups
from .group_table import ResolveGroupsEarly, grouped_rows


@METRICS.register_module()
class GroupF1Metric(ResolveGroupsEarly, BaseMetric):
    """Per-class F1, its macro mean over each group and over all classes, and accuracy.

    Per-class precision / recall / F1 are upstream's (``SingleLabelMetric.calculate`` with
    ``average=None``); a group's score is the plain mean of its classes' F1, every class of
    the group counted, which is sklearn's ``f1_score(average='macro', labels=group)``.

    Result keys: ``head_f1``, ``middle_f1``, ``tail_f1``, ``macro_f1`` (all classes),
    ``accuracy`` (percent, like mmpretrain's metrics) and, with ``classwise``,
    ``f1/<class>``. A per-class table is logged.

    Args:
        groups: ``None`` takes the data set's ``metainfo['groups']`` (``DOTACropDataset``
            resolves it) and falls back to ``'dota'``; or a spec for ``resolve_groups``.
        class_counts: training counts per class, only for ``groups='auto'`` (default:
            the data set's ``metainfo['train_counts']``).
    """
    default_prefix: Optional[str] = None

    def __init__(self,
                 groups: Optional[GroupSpec] = None,
                 class_counts: Optional[Sequence[int]] = None,
                 group_thresholds: Optional[Dict[str, float]] = None,
                 classwise: bool = True,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if groups is not None:
            check_group_spec(groups, 'GroupF1Metric.groups')
        self.groups_cfg, self.class_counts = groups, class_counts
        self.group_thresholds, self.classwise = group_thresholds, classwise
        self._groups: Optional[Dict[str, List[str]]] = None

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if 'pred_score' in sample:
                pred = int(torch.as_tensor(sample['pred_score']).argmax())
            else:
                pred = int(torch.as_tensor(sample['pred_label']).reshape(-1)[0])
            gt = int(torch.as_tensor(sample['gt_label']).reshape(-1)[0])
            self.results.append((pred, gt))

    def class_groups(self) -> Dict[str, List[str]]:
        """The groups for this dataset's classes (every class in one, no group empty)."""
        classes = list(self.dataset_meta['classes'])
        spec, key = self.groups_cfg, 'GroupF1Metric.groups'
        counts = self.class_counts
        if counts is None:
            counts = self.dataset_meta.get('train_counts')
        if spec is None:
            if 'groups' in self.dataset_meta:
                spec, key = dict(self.dataset_meta['groups']), "the data set's groups"
            else:
                spec = 'dota'
        return resolve_groups(classes, counts, spec, self.group_thresholds, key=key)

    def compute_metrics(self, results: List) -> Dict[str, float]:
        classes = list(self.dataset_meta['classes'])
        pred, gt = (torch.tensor(v, dtype=torch.long) for v in zip(*results))
        precision, recall, f1, support = SingleLabelMetric.calculate(
            pred, gt, average=None, num_classes=len(classes))
        f1 = f1.double().numpy()
        groups = self._groups or self.class_groups()  # resolved (and warned) once
        out: Dict[str, float] = {}
        for g in GROUP_NAMES:
            idx = [classes.index(c) for c in groups.get(g, [])]
            out[f'{g}_f1'] = float(np.mean(f1[idx])) if idx else float('nan')
        out['macro_f1'] = float(np.mean(f1))
        out['accuracy'] = float((pred == gt).double().mean() * 100)
        if self.classwise:
            out.update({f'f1/{c}': float(v) for c, v in zip(classes, f1)})
        MMLogger.get_current_instance().info(
            '\n' + self.format_table(classes, groups, f1, precision.numpy(),
                                     recall.numpy(), support.numpy(), out))
        return out

    @staticmethod
    def format_table(classes: Sequence[str], groups: Dict[str, List[str]], f1: np.ndarray,
                     precision: np.ndarray, recall: np.ndarray, support: np.ndarray,
                     res: Dict[str, float]) -> str:
        """Per-class precision / recall / F1 grouped by head / middle / tail."""
        rows = grouped_rows(classes, groups, f"{'n':>6}{'P':>8}{'R':>8}{'F1':>8}",
                            lambda i: f'{int(support[i]):>6}{precision[i]:>8.2f}'
                                      f'{recall[i]:>8.2f}{f1[i]:>8.2f}')
        for key in [f'{g}_f1' for g in GROUP_NAMES] + ['macro_f1', 'accuracy']:
            rows.append(f'{key:<50}{res[key]:>8.2f}')
        return '\n'.join(rows)
