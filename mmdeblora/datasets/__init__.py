from .checked_dota import AnnotationError, CheckedDOTADataset
from .class_stats import (ClassStats, compute_class_stats, config_class_stats,
                          dataset_class_counts, load_or_compute_class_stats,
                          resolve_groups)
from .class_groups import (DOTA_CLASSES, DOTA_GROUPS, check_groups,
                           groups_from_counts)
from .toy_dota import make_toy_dota

__all__ = [
    'AnnotationError', 'CheckedDOTADataset', 'DOTA_CLASSES', 'DOTA_GROUPS',
    'check_groups', 'ClassStats', 'compute_class_stats', 'config_class_stats',
    'dataset_class_counts', 'load_or_compute_class_stats', 'resolve_groups',
    'groups_from_counts', 'make_toy_dota'
]
