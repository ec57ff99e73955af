# debLoRA on the toy DOTA: Oriented R-CNN, LoRA ResNet-18 (rank 8, adapter 'default').
# Same 6 epochs in total as ../baselines/oriented_rcnn_r18_lora_toy.py (the LoRA-only
# baseline): stage 1 = epochs 0-3 (LoRA), then DebLoRAHook clusters the stage-1 instance
# features (K = 32), calibrates the tail classes and stage 2 = epochs 4-5 trains the new
# 'deblora' adapter (rank 8, the backbone's config) with the feature loss; the stage-1
# adapter and the neck are frozen.
_base_ = ['../baselines/oriented_rcnn_r18_lora_toy.py', '../_base_/deblora_hook.py']

model = dict(type='DebLoRAFasterRCNN')

# the shared DebLoRAHook options (K = 32, lambda 0.05, ...): ../_base_/deblora_hook.py
custom_hooks = [dict(**_base_.deblora_hook, switch_epoch=4)]  # stage-1 epochs
