# debLoRA on DOTA, Oriented R-CNN with a Stable Diffusion v1.5 UNet backbone.
# Stage 1 is exactly configs/baselines/oriented_rcnn_sd_lora_dota.py: LoRABackbone
# (SDBackbone) rank 8 on the UNet attention projections, 1024x1024 patches, AdamW lr 1e-4,
# 12 epochs with the lr steps at 8 and 11 (the same schedule as the LoRA baseline, so the
# comparison is fair), batch 2 per GPU; the LoRA adapter is named 'default'.
# Missing SD weights or DOTA stop tools/train.py at once with the --cfg-options to set.
_base_ = ['../baselines/oriented_rcnn_sd_lora_dota.py', '../_base_/deblora_hook.py']

# ---- de-biasing stage (DebLoRAHook, see docs/deblora.md) ----
# Stage 1 = epochs 0-7; then DebLoRAHook saves stage1_final.pth, extracts the GT instance
# features (fixed diffusion noise), runs K-means (K = 32) on at most 2000 instances per
# class, calibrates the tail classes, and stage 2 = epochs 8-11 trains the 'deblora'
# adapter (rank 8) + heads with the feature loss; stage-1 adapter, norms and neck frozen.
model = dict(type='DebLoRAFasterRCNN')
# lambda (loss_weight) 0.05 was chosen on the toy data only (docs/deblora.md), not on DOTA
custom_hooks = [
    dict(**_base_.deblora_hook, switch_epoch=8, max_per_class=2000, extract_batch_size=4),
]
