"""DOTAMetric that also reports mAP per head / middle / tail group."""
import itertools
import json
from collections import OrderedDict
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from mmengine.logging import MMLogger
from mmrotate.evaluation import DOTAMetric
from mmrotate.evaluation.functional import eval_rbbox_map
from mmrotate.registry import METRICS

from mmdeblora.datasets.class_groups import GROUP_NAMES, GroupSpec, check_group_spec, resolve_groups
from .group_table import ResolveGroupsEarly, grouped_rows


@METRICS.register_module()
class GroupDOTAMetric(ResolveGroupsEarly, DOTAMetric):
    """mmrotate's ``DOTAMetric`` plus per-group and per-class AP.

    The AP computation is upstream's ``eval_rbbox_map``, called once per IoU threshold
    exactly as ``DOTAMetric.compute_metrics`` does, so the overall ``mAP`` is the same
    number; we keep the per-class results it returns instead of dropping them.

    Args:
        groups: ``'dota'`` (the seed paper's DOTA grouping), a dict
            ``{'head': [...], 'middle': [...], 'tail': [...]}`` of class names, or
            ``'auto'`` to derive them from ``class_counts`` with ``group_thresholds``
            (share of training instances: head >= 10 %, tail < 1 % by default).
        class_counts: training instances per class (list in class order, or the path of
            a json file holding such a list or a ``{class: count}`` dict, e.g. the work
            dir's ``class_stats.json``); for ``groups='auto'``, and for the warning about
            tail classes never trained on. Default: the data set's
            ``metainfo['train_counts']``, as ``GroupF1Metric`` reads them.
        classwise: also return each class's AP as ``AP50/<class>``.
        nproc: processes for upstream's TP/FP computation (upstream fixes 4). With 1 the
            computation runs in this process: upstream starts a spawned pool whatever
            ``nproc`` is, about 5 s per evaluation on a small CPU, more than the work.
    """

    def __init__(self,
                 groups: GroupSpec = 'dota',
                 class_counts: Optional[Union[str, Sequence[int]]] = None,
                 group_thresholds: Optional[Dict[str, float]] = None,
                 classwise: bool = True,
                 nproc: int = 4,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        check_group_spec(groups, 'GroupDOTAMetric.groups')
        self.groups_cfg = groups
        self.class_counts = class_counts
        self.group_thresholds = group_thresholds
        self.classwise = classwise
        self.nproc = nproc
        self._groups: Optional[Dict[str, List[str]]] = None

    def scores_groups(self) -> bool:
        return not (self.format_only or self.merge_patches)  # else: submission files only

    def class_groups(self) -> Dict[str, List[str]]:
        """The groups for this dataset's classes (every class in one, no group empty)."""
        classes = list(self.dataset_meta['classes'])
        counts = self.class_counts
        if counts is None:
            counts = self.dataset_meta.get('train_counts')
        if counts is None and self.groups_cfg == 'auto':
            raise ValueError(
                "GroupDOTAMetric(groups='auto') needs the training counts per class: the "
                "data set's metainfo has no 'train_counts'; set the metric's class_counts "
                'to a list in class order or to the path of a json file (the work dir\'s '
                'class_stats.json, written by ClassStatsHook)')
        if isinstance(counts, str):
            with open(counts) as fh:
                counts = json.load(fh)
        if isinstance(counts, dict):  # class_stats.json or {class: count}
            counts = counts.get('counts', counts)
            counts = [counts[c] for c in classes]
        return resolve_groups(classes, counts, self.groups_cfg, self.group_thresholds,
                              key='GroupDOTAMetric.groups')

    def compute_metrics(self, results: list) -> dict:
        if self.format_only or self.merge_patches:
            return super().compute_metrics(results)
        logger: MMLogger = MMLogger.get_current_instance()
        gts, preds = zip(*results)
        classes = list(self.dataset_meta['classes'])
        dets = [pred['pred_bbox_scores'] for pred in preds]
        groups = self._groups or self.class_groups()  # resolved (and warned) once
        if self.outfile_prefix is not None:  # as upstream: keep the json results
            self.results2json(preds, self.outfile_prefix)

        eval_results: Dict[str, float] = OrderedDict()
        mean_aps, class_aps, num_gts = [], [], None
        for iou_thr in self.iou_thrs:
            logger.info(f'\n{"-" * 15}iou_thr: {iou_thr}{"-" * 15}')
            with in_process_pool(self.nproc == 1):
                mean_ap, per_class = eval_rbbox_map(
                    dets, gts, scale_ranges=self.scale_ranges, iou_thr=iou_thr,
                    use_07_metric=self.use_07_metric, box_type=self.predict_box_type,
                    dataset=classes, logger=logger, nproc=self.nproc)
            mean_aps.append(mean_ap)
            eval_results[f'AP{int(iou_thr * 100):02d}'] = round(mean_ap, 3)
            class_aps.append([float(np.mean(r['ap'])) for r in per_class])
            num_gts = [int(np.sum(r['num_gts'])) for r in per_class]
        eval_results['mAP'] = sum(mean_aps) / len(mean_aps)
        eval_results.move_to_end('mAP', last=False)

        ap = np.mean(np.array(class_aps), axis=0)  # mean over IoU thresholds
        for g in GROUP_NAMES:
            idx = [classes.index(c) for c in groups.get(g, []) if num_gts[classes.index(c)]]
            eval_results[f'{g}_mAP'] = float(np.mean(ap[idx])) if idx else float('nan')
        if self.classwise:
            tag = f'AP{int(self.iou_thrs[0] * 100):02d}' if len(self.iou_thrs) == 1 \
                else 'AP'
            for c, v in zip(classes, ap):
                eval_results[f'{tag}/{c}'] = float(v)
        logger.info('\n' + self.format_table(classes, groups, ap, num_gts, eval_results))
        return eval_results

    @staticmethod
    def format_table(classes: Sequence[str], groups: Dict[str, List[str]],
                     ap: np.ndarray, num_gts: Sequence[int], res: dict) -> str:
        """Per-class AP grouped by head / middle / tail, then the group means."""
        rows = grouped_rows(classes, groups, f"{'gts':>6}{'AP':>8}",
                            lambda i: f'{num_gts[i]:>6}{ap[i]:>8.3f}')
        for g in GROUP_NAMES:
            rows.append(f"{g + ' mAP':<34}{res[f'{g}_mAP']:>8.3f}")
        rows.append(f"{'mAP':<34}{res['mAP']:>8.3f}")
        return '\n'.join(rows)


class _InProcessPool:
    """What ``eval_rbbox_map`` uses of a ``multiprocessing.Pool``, run in this process."""

    def __init__(self, processes: int = 1) -> None:
        self.processes = processes

    @staticmethod
    def starmap(func, iterable) -> list:
        return list(itertools.starmap(func, iterable))

    def close(self) -> None:
        pass


class _InProcessContext:
    Pool = _InProcessPool


@contextmanager
def in_process_pool(enabled: bool = True):
    """Run upstream's ``eval_rbbox_map`` without its process pool (same results: the pool
    only maps ``tpfp_default`` over the images)."""
    from mmrotate.evaluation.functional import mean_ap
    if not enabled:
        yield
        return
    upstream = mean_ap.get_context
    mean_ap.get_context = lambda method=None: _InProcessContext
    try:
        yield
    finally:
        mean_ap.get_context = upstream
