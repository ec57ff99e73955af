# cLoRA + debLoRA: the cLoRA row, then debLoRA's stage as in bias_lora_deblora.py (same
# options; only the stage-1 adapters differ: the three group adapters). Each crop's
# feature is the one on its own class's route; the new 'deblora' adapter joins every route.
# lambda-0 control: --cfg-options custom_hooks.1.loss_weight=0
_base_ = './bias_clora.py'

model = dict(type='DebLoRAImageClassifier')
custom_hooks = [
    dict(type='TrainableParamsHook'),
    dict(type='DebLoRAHook',
         switch_epoch=20,
         num_clusters=32,
         kmeans=dict(n_init=3, max_iter=100, tol=1e-4, seed=0),
         weighting='balanced',
         alpha_mode='imbalance', alpha_max=0.5,
         groups='dota', calibrate_groups=['tail'],
         loss_weight=0.05,          # as bias_lora_deblora.py (see there)
         pool='avg', normalize=True,
         extract_batch_size=256,
         stage1_adapters=['clora_head', 'clora_middle', 'clora_tail']),
]
