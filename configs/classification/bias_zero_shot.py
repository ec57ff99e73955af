# Zero-shot row: the frozen foundation (all stages, norms in eval mode) and a linear
# classifier trained on the long-tailed target crops.
_base_ = ['./_base_/default_runtime.py', './_base_/resnet_tiny.py',
          './_base_/schedule_cpu.py', './_base_/bias_benchmark.py']

model = dict(backbone=dict(
    frozen_stages=4, norm_eval=True,
    init_cfg=dict(type='Pretrained', checkpoint={{_base_.foundation}}, prefix='backbone.')))
