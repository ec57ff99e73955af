# debLoRA on DOTA, Oriented R-CNN with a Stable Diffusion v1.5 UNet backbone.
# Stage 1 (this file for now): exactly configs/baselines/oriented_rcnn_sd_lora_dota.py:
# LoRABackbone(SDBackbone) rank 8 on the UNet attention projections, 1024x1024 patches,
# AdamW lr 1e-4, 12 epochs (steps at 8 and 11), batch 2 per GPU; the LoRA adapter is named
# 'default'. The de-biasing stage (a second adapter) is added on top of this file.
# Missing SD weights or DOTA stop tools/train.py at once with the --cfg-options to set.
_base_ = '../baselines/oriented_rcnn_sd_lora_dota.py'
