"""Safe checkpoint loading for runs started by other tools: list this module in a config's
``custom_imports`` and importing it (while mmengine reads the config, before any runner or
checkpoint exists) does what ``register_all_modules(safe_checkpoints=True)`` does for
loading::

    custom_imports = dict(imports=['mmdeblora', 'mmdeblora.safe_loading'],
                          allow_failed_imports=False)

Our own tools do not need it: they call :func:`mmdeblora.utils.register_all_modules`.
"""
from mmdeblora.utils.checkpoint import enable_safe_checkpoints

enable_safe_checkpoints()
