# Runtime shared by the classification configs: mmpretrain's registries, CPU-friendly
# hooks. Classification runs with default_scope='mmpretrain' (detection: 'mmrotate').
default_scope = 'mmpretrain'
# mmdeblora.safe_loading: weights-only checkpoint loads also under mmengine's / mmrotate's
# own tools (ours call mmdeblora.utils.register_all_modules); README, "Using it"
custom_imports = dict(imports=['mmdeblora', 'mmdeblora.safe_loading'],
                      allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=-1, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
)
# every run states what it trains (the tables' "trainable parameters" column)
custom_hooks = [dict(type='TrainableParamsHook')]

env_cfg = dict(cudnn_benchmark=False,
               mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
