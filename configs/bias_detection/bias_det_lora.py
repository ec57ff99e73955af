# Detection benchmark, LoRA row: Oriented R-CNN with the source-pretrained foundation in
# LoRABackbone on the long-tailed bias scenes (docs/deblora.md, "Detection where the bias
# is real"). Everything is in the base; this file names the row.
_base_ = './_base_/oriented_rcnn_tiny_lora.py'
