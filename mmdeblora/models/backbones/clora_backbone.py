"""cLoRA for classification: one LoRA adapter per route (a class or a class group), every
image run through each route, so that a head can score each class with its own adapter.

The project's cLoRA (docs/lora.md) is per-class LoRA: named adapters ``clora_<class>``.
Training one adapter per class in its own run and combining them at test time does not fit
a CPU budget, and a class's adapter trained on that class's images alone never learns to
*reject* the other classes. Here all routes train in one run: ``forward`` runs the input
once per route with that route's adapter (plus any shared adapter, e.g. debLoRA's
``deblora``) and stacks the outputs along the batch dimension, route-major: a batch of N
gives R * N rows per output level. ``CLoRAClsHead`` scores class c on the rows of its route,
so every image's class-c logit comes from route(c)'s adapter, in training and at test time
alike (the test-time combination). With ``routes=['head', 'middle', 'tail']`` (one adapter
per DOTA group, the CPU configs) a step costs about 3 LoRA forward/backward passes; with one
route per class (15 on DOTA) about 15.

Active set semantics: route r's pass uses ``[r]`` (if r is active) plus every active
adapter that is not a route (shared). So ``adapters_only(routes)`` gives the stage-1 cLoRA
model, ``adapters_only([])`` the base for every route, and a debLoRA stage adds its adapter
to every route.

``select`` is the seed paper's procedure, one class per run: only that route's adapter
trains (the run's data restricted to the class is the dataset config's job); the other
routes stay active and frozen, so their adapters (e.g. loaded from earlier runs with
``load_adapters``) still score their classes.
"""
import re
from typing import List, Optional, Sequence

import torch
from mmpretrain.registry import MODELS as PRETRAIN_MODELS
from mmrotate.registry import MODELS

from .lora_backbone import LoRABackbone


def clora_adapter_name(class_name: str) -> str:
    """Adapter name cLoRA uses for a class (`small-vehicle` -> `clora_small_vehicle`)."""
    return 'clora_' + re.sub(r'\W', '_', str(class_name))


@MODELS.register_module()
class CLoRABackbone(LoRABackbone):
    """``LoRABackbone`` with one adapter per route (``clora_<route>``), run route by route.

    Args:
        routes: route names, e.g. ``['head', 'middle', 'tail']`` or the class names; the
            adapters are ``clora_<route>`` (non-word characters -> ``_``). Their order is
            the row order of the output (``CLoRAClsHead`` indexes routes in this order).
        select: the route whose adapter this run trains (one class per run); every other
            route's adapter is frozen, and stays active. ``None``: all routes train.
        **kwargs: ``LoRABackbone`` options (``backbone``, ``pretrained``, ``rank``,
            ``alpha``, ``target_modules``, ``trainable_extra`` ...); not ``adapter_name``.
    """

    def __init__(self, backbone: dict, routes: Sequence[str], select: Optional[str] = None,
                 **kwargs) -> None:
        if kwargs.get('adapter_name') is not None:
            raise ValueError('CLoRABackbone sets its adapters from routes; drop adapter_name')
        if isinstance(routes, str) or not routes:
            raise ValueError(f'CLoRABackbone.routes must be a non-empty list of names, got '
                             f'{routes!r}')
        names = [clora_adapter_name(r) for r in routes]
        if len(set(names)) != len(names):
            raise ValueError(f'CLoRABackbone.routes give duplicate adapter names {names}')
        kwargs.pop('adapter_name', None)
        super().__init__(backbone, adapter_name=names[0], **kwargs)
        for name in names[1:]:
            self.add_adapter(name)
        self.routes: List[str] = names
        if select is not None:
            if clora_adapter_name(select) not in names:
                raise ValueError(f'select={select!r} is not one of the routes {list(routes)}')
            for name in names:
                if name != clora_adapter_name(select):
                    self.freeze_adapter(name)

    def route_adapters(self, route: str, active: Optional[Sequence[str]] = None) -> List[str]:
        """The adapters of ``route``'s pass under ``active`` (default: the current set)."""
        active = self.active_adapters if active is None else list(active)
        shared = [a for a in active if a not in self.routes]
        return ([route] if route in active else []) + shared

    def forward(self, x: torch.Tensor):
        # one adapter switch per route and one back (not an adapters_only per route: a
        # switch costs a walk over the LoRA layers, see LoRABackbone._switch)
        saved, outs = self.active_adapters, []
        try:
            for route in self.routes:
                self._switch(self.route_adapters(route, saved))
                outs.append(self.base(x))
        finally:
            self._switch(saved)
        if isinstance(outs[0], torch.Tensor):
            return torch.cat(outs)
        return tuple(torch.cat(level) for level in zip(*outs))

    def merge_and_unload(self):
        raise NotImplementedError('a cLoRA backbone has one adapter per route and no single '
                                  'merged backbone; keep the adapters')


PRETRAIN_MODELS.register_module(module=CLoRABackbone)  # the classification configs' scope
