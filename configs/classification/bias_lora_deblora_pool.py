# LoRA + debLoRA whose K-means also sees an unlabelled pool (`DebLoRAHook.cluster_pool`):
# the class-balanced training images of the oracle (`train_balanced`), their labels never
# read. Everything else is `bias_lora_deblora.py`'s. Where the pool holds more of the tail
# than the labelled set, the clusters see the tail classes better than their few labels
# do, and h_c can be a better estimate of a class than its training mean (premise c,
# docs/deblora.md "An unlabelled pool: the premise from more data").
# lambda-0 control: --cfg-options DebLoRAHook.loss_weight=0 (no targets: the pool is unused)
_base_ = ['./bias_lora_deblora.py']

custom_hooks = [
    _base_.custom_hooks[0],
    dict(_base_.custom_hooks[1],
         cluster_pool=dict(folders=dict(train='train_balanced', val='val', test='test'))),
]
