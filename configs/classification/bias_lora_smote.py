# LoRA + SMOTE (Chawla et al., 2002) in feature space: every step, the linear head also
# trains on synthetic minority features interpolated between a bank feature and one of its
# k = 5 nearest same-class neighbours, enough to balance the classes in expectation.
# Synthetic features are detached: they re-balance the classifier only (SMOTEClsHead).
# unique_samples: one bank entry per crop (its latest view), so neighbours are other crops;
# the ring bank (False, the rows made before 2026-12-05) holds ~64 / n_c views of each
# crop of a small class (docs/classification.md, "SMOTE's instability").
_base_ = './bias_lora.py'

model = dict(head=dict(type='SMOTEClsHead', k_neighbors=5, bank_size=64,
                       class_counts='auto', unique_samples=True))
custom_hooks = [dict(type='TrainableParamsHook'),
                dict(type='ClassStatsHook', groups='dota')]
