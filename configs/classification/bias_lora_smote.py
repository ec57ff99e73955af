# LoRA + SMOTE (Chawla et al., 2002) in feature space: every step, the linear head also
# trains on synthetic minority features interpolated between a bank feature and one of its
# k = 5 nearest same-class neighbours, enough to balance the classes in expectation.
# Synthetic features are detached: they re-balance the classifier only (SMOTEClsHead).
_base_ = './bias_lora.py'

model = dict(head=dict(type='SMOTEClsHead', k_neighbors=5, bank_size=64,
                       class_counts='auto'))
custom_hooks = [dict(type='TrainableParamsHook'),
                dict(type='ClassStatsHook', groups='dota')]
