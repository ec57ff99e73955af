"""The bias benchmark: a generated classification benchmark where a long-tailed target
domain gives a foundation adapted to it a head-biased representation (see
docs/classification.md)."""
from .generate import (CLASS_ORDER, SOURCE_DEFAULTS, TARGET_DEFAULTS, make_bias_source,
                       make_bias_target, target_counts)
from .source import render_source_image, source_classes
from .target import BIASES, SIBLINGS, TargetStyle

__all__ = ['BIASES', 'CLASS_ORDER', 'SIBLINGS', 'SOURCE_DEFAULTS', 'TARGET_DEFAULTS',
           'TargetStyle', 'make_bias_source', 'make_bias_target', 'render_source_image',
           'source_classes', 'target_counts']
