from .cls_reweight_loss import ClsReweightLoss
from .dro_lt_loss import DROLTLoss
from .ecm_loss import ECMLoss, ecm_margins_and_weights
from .logit_adjust_loss import LogitAdjustLoss
from .reweight_loss import ReweightLoss, reweight_class_weights

__all__ = ['ECMLoss', 'ReweightLoss', 'ecm_margins_and_weights', 'reweight_class_weights',
           'ClsReweightLoss', 'DROLTLoss', 'LogitAdjustLoss']
