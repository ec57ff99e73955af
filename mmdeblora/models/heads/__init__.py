from .clora_cls_head import CLoRAClsHead
from .dro_lt_cls_head import DROLTClsHead
from .reslt_cls_head import ResLTClsHead, reslt_branch_classes
from .smote_cls_head import SMOTEClsHead, smote_features

__all__ = ['CLoRAClsHead', 'DROLTClsHead', 'ResLTClsHead', 'SMOTEClsHead',
           'reslt_branch_classes', 'smote_features']
