# Fine-tune row: every foundation weight trained on the long-tailed target crops.
_base_ = ['./_base_/default_runtime.py', './_base_/resnet_tiny.py',
          './_base_/schedule_cpu.py', './_base_/bias_benchmark.py']

model = dict(backbone=dict(
    init_cfg=dict(type='Pretrained', checkpoint={{_base_.foundation}}, prefix='backbone.')))
