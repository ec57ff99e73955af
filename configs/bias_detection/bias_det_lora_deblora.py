# Detection benchmark, LoRA + debLoRA: the LoRA row's 8 epochs and schedule; stage 1 =
# epochs 0-5 (LoRA), then DebLoRAHook clusters the stage-1 RoI features of the training
# objects (K = 32), calibrates the tail classes, and stage 2 = epochs 6-7 trains a new
# 'deblora' adapter (rank 8) with the feature loss; the stage-1 adapter and the neck are
# frozen, the heads keep training. The shared hook options: ../_base_/deblora_hook.py.
# lambda-0 control: --cfg-options DebLoRAHook.loss_weight=0
_base_ = ['./bias_det_lora.py', '../_base_/deblora_hook.py']

model = dict(type='DebLoRAFasterRCNN')
custom_hooks = [dict(**_base_.deblora_hook, switch_epoch=6, groups='dota')]
