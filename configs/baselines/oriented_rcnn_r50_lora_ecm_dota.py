# (d) LoRA + ECM on DOTA: effective class-margin loss (C + 1 sigmoid outputs) in the RoI
# classifier, margins from the training set's instance counts (ClassStatsHook).
_base_ = './oriented_rcnn_r50_lora_dota.py'

model = dict(roi_head=dict(bbox_head=dict(loss_cls=dict(
    _delete_=True, type='ECMLoss', num_classes=15, class_counts='auto'))))
custom_hooks = [dict(type='ClassStatsHook', groups='dota')]
