"""DOTAMetric that also reports mAP per head / middle / tail group."""
import json
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from mmengine.logging import MMLogger
from mmrotate.evaluation import DOTAMetric
from mmrotate.evaluation.functional import eval_rbbox_map
from mmrotate.registry import METRICS

from mmdeblora.datasets.class_groups import GROUP_NAMES, GroupSpec, check_group_spec, resolve_groups


@METRICS.register_module()
class GroupDOTAMetric(DOTAMetric):
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
            a json file holding such a list or a ``{class: count}`` dict); only for
            ``groups='auto'``.
        classwise: also return each class's AP as ``AP50/<class>``.
        nproc: processes for upstream's TP/FP computation (upstream fixes 4).
    """

    def __init__(self,
                 groups: GroupSpec = 'dota',
                 class_counts: Optional[Union[str, Sequence[int]]] = None,
                 group_thresholds: Optional[Dict[str, float]] = None,
                 classwise: bool = True,
                 nproc: int = 4,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        check_group_spec(groups)
        if groups == 'auto' and class_counts is None:
            raise ValueError("groups='auto' needs class_counts (a list or a json path)")
        self.groups_cfg = groups
        self.class_counts = class_counts
        self.group_thresholds = group_thresholds
        self.classwise = classwise
        self.nproc = nproc

    def class_groups(self) -> Dict[str, List[str]]:
        """The groups for this dataset's classes (classes of no group are left out)."""
        classes = list(self.dataset_meta['classes'])
        counts = self.class_counts
        if isinstance(counts, str):
            with open(counts) as fh:
                counts = json.load(fh)
        if isinstance(counts, dict):  # class_stats.json or {class: count}
            counts = counts.get('counts', counts)
            counts = [counts[c] for c in classes]
        return resolve_groups(classes, counts, self.groups_cfg, self.group_thresholds)

    def compute_metrics(self, results: list) -> dict:
        if self.format_only or self.merge_patches:
            return super().compute_metrics(results)
        logger: MMLogger = MMLogger.get_current_instance()
        gts, preds = zip(*results)
        classes = list(self.dataset_meta['classes'])
        dets = [pred['pred_bbox_scores'] for pred in preds]
        groups = self.class_groups()
        if self.outfile_prefix is not None:  # as upstream: keep the json results
            self.results2json(preds, self.outfile_prefix)

        eval_results: Dict[str, float] = OrderedDict()
        mean_aps, class_aps, num_gts = [], [], None
        for iou_thr in self.iou_thrs:
            logger.info(f'\n{"-" * 15}iou_thr: {iou_thr}{"-" * 15}')
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
        group_of = {c: g for g, names in groups.items() for c in names}
        order = sorted(range(len(classes)), key=lambda i: (
            GROUP_NAMES.index(group_of[classes[i]]) if classes[i] in group_of else 3, i))
        rows = [f"{'class':<20}{'group':<8}{'gts':>6}{'AP':>8}", '-' * 42]
        for i in order:
            rows.append(f'{classes[i]:<20}{group_of.get(classes[i], "-"):<8}'
                        f'{num_gts[i]:>6}{ap[i]:>8.3f}')
        rows.append('-' * 42)
        for g in GROUP_NAMES:
            rows.append(f"{g + ' mAP':<34}{res[f'{g}_mAP']:>8.3f}")
        rows.append(f"{'mAP':<34}{res['mAP']:>8.3f}")
        return '\n'.join(rows)
