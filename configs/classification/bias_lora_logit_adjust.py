# LoRA + logit adjustment (Menon et al., ICLR 2021), the loss variant: cross-entropy on
# f(x) + tau * log(prior), tau = 1; prediction is the plain argmax of f(x).
# Priors: the training split's counts, from ClassStatsHook.
_base_ = './bias_lora.py'

model = dict(head=dict(loss=dict(type='LogitAdjustLoss', tau=1.0, class_counts='auto')))
custom_hooks = [dict(type='TrainableParamsHook'),
                dict(type='ClassStatsHook', groups='dota')]
