from .reslt_bbox_head import ResLTBBoxHead, ResLTClassifier

__all__ = ['ResLTBBoxHead', 'ResLTClassifier']
