# (e) LoRA + ResLT on DOTA: branches for all / middle+tail / tail classes of the paper's
# DOTA grouping on the RoI head's shared feature (groups from ClassStatsHook).
_base_ = './oriented_rcnn_sd_lora_dota.py'

model = dict(roi_head=dict(bbox_head=dict(type='ResLTBBoxHead', beta=0.9, groups='auto')))
custom_hooks = [dict(type='ClassStatsHook', groups='dota')]
