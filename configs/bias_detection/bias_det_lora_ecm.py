# Detection benchmark, LoRA + ECM: effective class-margin loss with C + 1 sigmoid outputs
# in the RoI classifier; the counts come from the training scenes (ClassStatsHook).
_base_ = './bias_det_lora.py'

model = dict(roi_head=dict(bbox_head=dict(loss_cls=dict(
    _delete_=True, type='ECMLoss', num_classes=15, class_counts='auto'))))
custom_hooks = [dict(type='ClassStatsHook', groups='dota')]
