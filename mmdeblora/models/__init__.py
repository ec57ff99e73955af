from .backbones import *  # noqa: F401,F403
from .detectors import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .roi_heads import *  # noqa: F401,F403
