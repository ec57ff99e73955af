# cLoRA + debLoRA: the cLoRA row, then debLoRA's stage as in bias_lora_deblora.py (same
# options, its stage 2 included: AdamW 1e-4, lambda 0.2, 16 replay crops, chosen on the
# LoRA row; only the stage-1 adapters differ: the three group adapters). Each crop's
# feature is the one on its own class's route; the new 'deblora' adapter joins every route.
# lambda-0 control: --cfg-options DebLoRAHook.loss_weight=0
_base_ = ['./bias_clora.py', '../_base_/deblora_hook.py']

model = dict(type='DebLoRAImageClassifier')
custom_hooks = [
    dict(type='TrainableParamsHook'),
    dict(_base_.deblora_hook, switch_epoch=20, groups='dota', extract_batch_size=256,
         stage1_adapters=['clora_head', 'clora_middle', 'clora_tail'],
         stage2_optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0)),
         loss_weight=0.2, replay=16),
]
