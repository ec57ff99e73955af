from .checkpoint import (CheckpointFileError, checkpoint_safe_globals, load_checkpoint_file,
                         load_safetensors_file, register_checkpoint_safe_globals,
                         register_safe_checkpoint_loader)
from .checkpoint_fit import CheckpointFit, CheckpointMismatchError, checkpoint_fit

__all__ = [
    'checkpoint_safe_globals', 'register_checkpoint_safe_globals', 'CheckpointFileError',
    'load_checkpoint_file', 'load_safetensors_file',
    'register_safe_checkpoint_loader', 'CheckpointFit',
    'CheckpointMismatchError', 'checkpoint_fit'
]
