from .checked_runner import CheckedRunner, use_checked_runner
from .debias import (DebiasResult, DebiasSettings, build_extraction_loader, build_pool_loader,
                     debias_model, extract_features, extraction_pipeline)
from .hooks import *  # noqa: F401,F403
from .optim import follow_trainable_set, regroup_optimizer, rewrap_model
from .stage2 import (hook_options, load_debias_model, measure_reach, settings_from_config,
                     split_options)

__all__ = [
    'DebiasResult', 'DebiasSettings', 'build_extraction_loader', 'build_pool_loader',
    'debias_model',
    'extract_features', 'extraction_pipeline', 'follow_trainable_set', 'regroup_optimizer',
    'rewrap_model', 'CheckedRunner', 'use_checked_runner', 'hook_options',
    'load_debias_model', 'measure_reach', 'settings_from_config', 'split_options'
]
