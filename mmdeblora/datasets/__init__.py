from .checked_dota import AnnotationError, CheckedDOTADataset, ImageCheckError
from .class_groups import (DOTA_CLASSES, DOTA_GROUPS, GROUP_NAMES, check_group_spec, check_groups,
                           group_indices, groups_from_counts, resolve_groups)
from .class_stats import (ClassStats, compute_class_stats, config_class_stats, dataset_class_counts,
                          load_or_compute_class_stats)
from .crop_dataset import DOTACropDataset
from .toy_dota import make_toy_dota

__all__ = [
    'AnnotationError', 'CheckedDOTADataset', 'ImageCheckError', 'DOTA_CLASSES', 'DOTA_GROUPS',
    'check_groups', 'ClassStats', 'compute_class_stats', 'config_class_stats',
    'dataset_class_counts', 'load_or_compute_class_stats', 'resolve_groups',
    'groups_from_counts', 'make_toy_dota', 'GROUP_NAMES', 'check_group_spec',
    'group_indices', 'DOTACropDataset'
]
