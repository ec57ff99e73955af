from .backbones import *  # noqa: F401,F403
from .classifiers import *  # noqa: F401,F403
from .debias_mixin import DebiasMixin, DebiasModel  # noqa: F401
from .detectors import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .necks import *  # noqa: F401,F403
from .roi_heads import *  # noqa: F401,F403
