from .ecm_loss import ECMLoss, ecm_margins_and_weights
from .reweight_loss import ReweightLoss, reweight_class_weights

__all__ = ['ECMLoss', 'ReweightLoss', 'ecm_margins_and_weights', 'reweight_class_weights']
