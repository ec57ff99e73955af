# Detection benchmark, LoRA + ResLT: three branches (all / middle+tail / tail) on the RoI
# head's shared feature; the branch groups come from ClassStatsHook (the DOTA grouping).
_base_ = './bias_det_lora.py'

model = dict(roi_head=dict(bbox_head=dict(type='ResLTBBoxHead', beta=0.9, groups='auto')))
custom_hooks = [dict(type='ClassStatsHook', groups='dota')]
