"""The head of cLoRA for classification: each class scored on its own route's features.

``CLoRABackbone`` gives R rows per image (route-major: rows r * N .. r * N + N - 1 are
route r); after global pooling the head computes the linear logits of every row and
assembles z[n, c] = (W f_{route(c), n} + b)_c: class c's logit for image n from the
features of c's route. The same assembly is used in training (cross-entropy on z) and at
test time, so this is cLoRA's test-time combination: no label is needed to choose an
adapter. ``instance_view`` gives each image's feature on its *true* class's route, the
instance feature of debLoRA's stage (``DebLoRAImageClassifier``).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor

from mmdeblora.datasets.class_groups import (DOTA_CLASSES, GROUP_NAMES, GroupSpec, check_group_spec,
                                             group_indices, resolve_groups)

ROUTES = ('groups', 'classes')


@MODELS.register_module()
class CLoRAClsHead(LinearClsHead):
    """``LinearClsHead`` over cLoRA's routes.

    Args:
        num_classes / in_channels: as ``LinearClsHead``.
        routes: ``'groups'`` (3 routes: head, middle, tail, in that order; the backbone's
            ``routes=['head', 'middle', 'tail']``) or ``'classes'`` (one route per class,
            in class order).
        groups: for ``'groups'``: ``'dota'`` or a dict of class names per group (resolved
            at build with ``classes``), or ``'auto'`` (set by ``ClassStatsHook`` before
            training). The class-to-route map is a buffer, saved in checkpoints, so testing
            needs no hook.
        classes: class names for ``groups`` (default: the 15 DOTA classes).
    """

    def __init__(self, num_classes: int, in_channels: int, routes: str = 'groups',
                 groups: GroupSpec = 'dota', classes: Optional[Sequence[str]] = None,
                 **kwargs) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, **kwargs)
        if routes not in ROUTES:
            raise ValueError(f'CLoRAClsHead.routes must be one of {ROUTES}, got {routes!r}')
        check_group_spec(groups, 'CLoRAClsHead.groups')
        self.routes = routes
        self.num_routes = len(GROUP_NAMES) if routes == 'groups' else num_classes
        self.register_buffer('route_of_class', torch.full((num_classes, ), -1))
        if routes == 'classes':
            self.route_of_class = torch.arange(num_classes)
        elif groups != 'auto':
            classes = list(classes or DOTA_CLASSES)
            if len(classes) != num_classes:
                raise ValueError(f'CLoRAClsHead has {num_classes} classes but classes names '
                                 f'{len(classes)}; set classes=[...]')
            self.set_class_groups(group_indices(resolve_groups(classes, None, groups),
                                                classes))

    def set_class_groups(self, groups: Dict[str, Sequence[int]]) -> None:
        """Class indices per group -> route of each class (``ClassStatsHook`` calls it)."""
        if self.routes != 'groups':
            return
        route = torch.full((self.num_classes, ), -1, dtype=torch.long)
        for g, idx in groups.items():
            route[list(idx)] = GROUP_NAMES.index(g)
        missing = (route < 0).nonzero().flatten().tolist()
        if missing:
            raise ValueError(f'CLoRAClsHead: classes {missing} are in no group; every class '
                             'needs a route')
        self.route_of_class = route.to(self.route_of_class.device)

    def _routes(self) -> Tensor:
        if (self.route_of_class < 0).any():
            raise RuntimeError("CLoRAClsHead(groups='auto') has no class groups yet: add "
                               "custom_hooks=[dict(type='ClassStatsHook', groups=...)] or "
                               "set groups='dota' / a dict of class names")
        return self.route_of_class

    def route_views(self, x: Tensor, num_images: Optional[int] = None) -> Tensor:
        """[R * N, D] route-major rows -> [R, N, D]."""
        rows, r = x.shape[0], self.num_routes
        if rows % r or (num_images is not None and rows != r * num_images):
            raise ValueError(
                f'CLoRAClsHead(routes={self.routes!r}) expects {r} feature rows per image '
                f'(a CLoRABackbone with {r} routes), got {rows} rows'
                + (f' for {num_images} images' if num_images is not None else ''))
        return x.view(r, rows // r, *x.shape[1:])

    def assemble(self, x: Tensor, num_images: Optional[int] = None) -> Tensor:
        """z[n, c] = fc(f_{route(c), n})_c, [N, C]."""
        logits = self.fc(self.route_views(x, num_images))  # [R, N, C]
        route = self._routes().to(logits.device)
        index = route.view(1, 1, -1).expand(1, logits.shape[1], -1)
        return logits.gather(0, index).squeeze(0)

    def instance_view(self, x: Tensor, labels: Tensor) -> Tensor:
        """Each image's feature on its true class's route, [N, D]."""
        views = self.route_views(x, labels.numel())
        route = self._routes().to(labels.device)[labels.long()]
        images = torch.arange(labels.numel(), device=views.device)
        return views[route.to(views.device), images]

    def forward(self, feats: Tuple[Tensor]) -> Tensor:
        return self.assemble(self.pre_logits(feats))

    def loss(self, feats: Tuple[Tensor], data_samples: List[DataSample], **kwargs) -> dict:
        scores = self.assemble(self.pre_logits(feats), len(data_samples))
        return self._get_loss(scores, data_samples, **kwargs)

    def extra_repr(self) -> str:
        return f'routes={self.routes!r}, num_routes={self.num_routes}'
