"""The debLoRA method in plain torch: no runner, no registry."""
from .calibration import (ALPHA_MODES, WEIGHTINGS, calibrate, calibrated_mask,
                          center_weights, class_alphas, count_matrix, debiased_centers)
from .features import (cap_per_class, extract_dataset_features, gt_instance_features,
                       gt_rois, pool_roi_feats)
from .kmeans import KMeansResult, assign, kmeans, kmeans_plusplus
from .state import DebiasState, fit_debias
from .stats import class_centroids, feature_stats

__all__ = [
    'ALPHA_MODES', 'WEIGHTINGS', 'calibrate', 'calibrated_mask', 'center_weights',
    'class_alphas', 'count_matrix', 'debiased_centers', 'cap_per_class',
    'extract_dataset_features', 'gt_instance_features', 'gt_rois', 'pool_roi_feats',
    'KMeansResult', 'assign', 'kmeans', 'kmeans_plusplus', 'DebiasState', 'fit_debias',
    'class_centroids', 'feature_stats'
]
