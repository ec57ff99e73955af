# (c) LoRA + Reweight on DOTA: inverse-frequency class weights in the RoI classifier's
# softmax cross-entropy, from the training set's instance counts (ClassStatsHook).
_base_ = './oriented_rcnn_r50_lora_dota.py'

model = dict(roi_head=dict(bbox_head=dict(loss_cls=dict(
    _delete_=True, type='ReweightLoss', class_counts='auto', mode='inverse'))))
custom_hooks = [dict(type='ClassStatsHook', groups='dota')]
