# LoRA + debLoRA on real DOTA object crops with Stable Diffusion v1.5 (GPU): the LoRA row's
# 12 epochs and schedule; stage 1 = epochs 0-7 (LoRA), then DebLoRAHook extracts the
# crops' features (fixed diffusion noise, 8 draws), runs K-means (K = 32) on at most 2000
# crops per class, calibrates the tail classes, and stage 2 = epochs 8-11 trains a new
# 'deblora' adapter (rank 8) with the feature loss; the stage-1 adapter is frozen.
_base_ = ['./sd_lora_dota.py', '../_base_/deblora_hook.py']

model = dict(type='DebLoRAImageClassifier')
custom_hooks = [
    dict(type='TrainableParamsHook'),
    # lambda (loss_weight) 0.05: the toy detection and bias benchmark value, not tuned on DOTA
    dict(**_base_.deblora_hook, switch_epoch=8, groups='dota', max_per_class=2000,
         extract_batch_size=32),
]
