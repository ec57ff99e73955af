# LoRA + DRO-LT (Samuel & Chechik, ICCV 2021): cross-entropy plus the distributional
# robustness loss on class centroids of the pooled features (temperature 1, learned
# per-class margin eps initialised to 1: the official README's recipe), trained jointly.
_base_ = './bias_lora.py'

model = dict(head=dict(
    type='DROLTClsHead', bank_size=64,
    loss_dro=dict(temperature=1.0, epsilon=1.0, learn_epsilon=True, loss_weight=1.0)))
