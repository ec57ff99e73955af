# cLoRA + debLoRA: the cLoRA row, then debLoRA's stage as in bias_lora_deblora.py (same
# options but the stage-2 default: the run's SGD, lambda 0.05, no replay, as measured
# for this row; the LoRA row's AdamW + replay default was chosen on the LoRA row only;
# only the stage-1 adapters differ: the three group adapters). Each crop's
# feature is the one on its own class's route; the new 'deblora' adapter joins every route.
# lambda-0 control: --cfg-options DebLoRAHook.loss_weight=0
_base_ = ['./bias_clora.py', '../_base_/deblora_hook.py']

model = dict(type='DebLoRAImageClassifier')
custom_hooks = [
    dict(type='TrainableParamsHook'),
    dict(**_base_.deblora_hook, switch_epoch=20, groups='dota', extract_batch_size=256,
         stage1_adapters=['clora_head', 'clora_middle', 'clora_tail']),
]
