# LoRA + Reweight: the LoRA row with softmax cross-entropy weighted by 1 / n_c (mean 1 over
# the classes), the detection baseline's ReweightLoss without a background channel.
# Counts: the training split's, handed to the loss by ClassStatsHook before epoch 0.
_base_ = './bias_lora.py'

model = dict(head=dict(loss=dict(type='ClsReweightLoss', mode='inverse',
                                 class_counts='auto')))
custom_hooks = [dict(type='TrainableParamsHook'),
                dict(type='ClassStatsHook', groups='dota')]
