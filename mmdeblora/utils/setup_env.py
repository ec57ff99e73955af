"""``register_all_modules``: the one call that sets up a process for mmdeblora runs.

``import mmdeblora`` only registers the package's components (models, hooks, data sets,
metrics) in the OpenMMLab registries; it does not change how anything is loaded, so
importing it for a loss or a head leaves mmengine's checkpoint loader and torch's
``weights_only`` allow-list as they are. Our tools, benchmarks and tests call this function
first (in the style of ``mmdet.utils.register_all_modules``); a run started by mmengine's,
mmdet's or mmrotate's own ``tools/train.py`` gets the same safe loading by listing
``mmdeblora.safe_loading`` in ``custom_imports`` (README, "Using it").
"""
from typing import Union


def register_all_modules(init_default_scope: Union[bool, str] = False,
                         safe_checkpoints: bool = True) -> None:
    """Register mmdet's, mmrotate's, mmpretrain's and mmdeblora's modules.

    Args:
        init_default_scope: ``False`` (the default) leaves the default scope to the runner,
            i.e. the config's ``default_scope`` (mmrotate for detection, mmpretrain for
            classification); a scope name sets it now (``True``: ``'mmrotate'``), as
            mmengine's ``init_default_scope`` does.
        safe_checkpoints: every mmengine checkpoint load (runner checkpoints,
            ``load_from``, ``--resume``, ``init_cfg=dict(type='Pretrained')``) becomes a
            ``weights_only=True`` load that ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn
            off, and mmengine's checkpoint contents are allow-listed for it
            (:func:`mmdeblora.utils.checkpoint.enable_safe_checkpoints`).
    """
    from mmdet.utils import register_all_modules as register_mmdet
    from mmengine.registry import init_default_scope as set_default_scope
    from mmpretrain.utils import register_all_modules as register_mmpretrain
    from mmrotate.utils import register_all_modules as register_mmrotate
    register_mmdet(init_default_scope=False)
    register_mmrotate(init_default_scope=False)
    register_mmpretrain(init_default_scope=False)
    import mmdeblora  # noqa: F401  registers our modules
    if safe_checkpoints:
        from .checkpoint import enable_safe_checkpoints
        enable_safe_checkpoints()
    if init_default_scope:
        set_default_scope('mmrotate' if init_default_scope is True else init_default_scope)
