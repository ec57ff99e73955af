"""The debLoRA method in plain torch: no runner, no registry."""
from .calibration import (ALPHA_MODES, WEIGHTINGS, calibrate, calibrated_mask, center_weights,
                          class_alphas, count_matrix, debiased_centers, feature_loss, loss_scale)
from .features import (POOLS, cap_per_class, gt_instance_features, gt_rois, pool_feats,
                       pool_roi_feats, roi_extractor)
from .kmeans import KMeansResult, assign, kmeans, kmeans_plusplus
from .settings import Stage2Settings
from .state import DebiasState, fit_debias
from .stats import class_centroids, feature_stats

__all__ = [
    'ALPHA_MODES', 'WEIGHTINGS', 'calibrate', 'calibrated_mask', 'center_weights',
    'class_alphas', 'count_matrix', 'debiased_centers', 'feature_loss', 'loss_scale', 'POOLS',
    'cap_per_class', 'gt_instance_features', 'gt_rois', 'pool_feats', 'pool_roi_feats',
    'roi_extractor', 'KMeansResult', 'assign', 'kmeans', 'kmeans_plusplus',
    'Stage2Settings', 'DebiasState', 'fit_debias', 'class_centroids', 'feature_stats'
]
