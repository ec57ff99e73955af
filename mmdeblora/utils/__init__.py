from .checkpoint import (CheckpointFileError, checkpoint_safe_globals, enable_safe_checkpoints,
                         load_checkpoint_file, load_safetensors_file, load_weights_file,
                         register_checkpoint_safe_globals, register_safe_checkpoint_loader,
                         safe_checkpoint_loader_installed)
from .checkpoint_fit import CheckpointFit, CheckpointMismatchError, checkpoint_fit, load_pretrained
from .setup_env import register_all_modules

__all__ = [
    'checkpoint_safe_globals', 'register_checkpoint_safe_globals', 'CheckpointFileError',
    'load_checkpoint_file', 'load_safetensors_file', 'load_weights_file', 'load_pretrained',
    'register_safe_checkpoint_loader', 'CheckpointFit',
    'CheckpointMismatchError', 'checkpoint_fit', 'enable_safe_checkpoints',
    'safe_checkpoint_loader_installed', 'register_all_modules'
]
