"""Losses that only an RoI bbox head can use, refused anywhere else before training.

An mmdet ``BBoxHead`` asks a loss that says ``custom_cls_channels`` for its class channels
(``get_cls_channels``) when it is built; a dense head (one-stage detector, RPN) never does,
and would train such a loss without an error and to a useless model. The flag that call
sets is checked by ``CheckedRunner`` right after it builds the model (``check_placement``,
guard ``component_checks``, with the loss's config key), by the weight initialisation, which
any runner runs before the first iteration, and by the loss itself.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

ROI_KEY = 'model.roi_head.bbox_head.loss_cls'


def roi_only_hint(name: str, asked: str, outcome: str, instead: str) -> str:
    """The message of a loss found outside an RoI bbox head: the key, what happened and
    what to use instead."""
    return (f'{name} works only as the loss_cls of an RoI bbox head: {ROI_KEY} of a '
            'two-stage detector (model.roi_head.bbox_head.<i>.loss_cls in a cascade). Those '
            f'heads ask it for C + 1 class channels{asked}. It was built into a head that '
            "never asked: a one-stage detector's model.bbox_head.loss_cls or an RPN's "
            f'model.rpn_head.loss_cls, where {outcome}. Move it to the RoI head, or '
            f'{instead}; see docs/ecosystem.md ("Which long-tail component fits where")')


class RoIHeadOnlyLoss:
    """Mixin (before ``nn.Module``) of a classification loss over C + 1 softmax channels
    (background last) that a dense head must not hold.

    Subclasses set ``placement_hint`` (:func:`roi_only_hint`). ``get_activation`` is the
    softmax an RoI head would apply without ``custom_cls_channels`` (upstream's
    ``CrossEntropyCustomLoss`` does the same); a loss with its own overrides it.
    """

    custom_cls_channels = True
    placement_hint = ''
    # set by the RoI bbox head that builds us (get_cls_channels); dense heads never ask
    head_checked = False

    def get_cls_channels(self, num_classes: int) -> int:
        self.head_checked = True
        return num_classes + 1

    def get_activation(self, cls_score: torch.Tensor) -> torch.Tensor:
        return F.softmax(cls_score, dim=-1)

    def check_placement(self, model: Optional[nn.Module] = None, name: str = '') -> None:
        """Refuse a head that never asked for our class channels (``name``: where the loss
        sits in ``model``, for the message; ``CheckedRunner`` passes both)."""
        if not self.head_checked:
            raise ValueError((f'model.{name}: ' if name else '') + self.placement_hint)

    def init_weights(self) -> None:
        """The runner initialises weights before the first iteration: check there."""
        self.check_placement()
