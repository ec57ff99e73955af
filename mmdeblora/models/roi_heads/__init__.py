from .reslt_bbox_head import ResLTBBoxHead, ResLTClassifier, check_reslt_placement

__all__ = ['ResLTBBoxHead', 'ResLTClassifier', 'check_reslt_placement']
