"""The toy config's RoI bbox head (mmrotate's Oriented R-CNN head), shrunk for tests."""
from mmengine.config import Config
from mmrotate.registry import MODELS
from mmrotate.utils import register_all_modules

from tests.conftest import TOY_CFG

register_all_modules()  # mmrotate's default scope, as tools/train.py sets it


def toy_bbox_head(num_classes: int = 2, **overrides):
    """Oriented R-CNN's bbox head with 1-channel 1x1 RoI features and 4-wide fcs."""
    cfg = Config.fromfile(TOY_CFG).model.roi_head.bbox_head.to_dict()
    cfg.update(in_channels=1, fc_out_channels=4, roi_feat_size=1,
               num_classes=num_classes)
    cfg.update(overrides)  # plain dict: loss_cls etc. are replaced, not merged
    return MODELS.build(cfg)
