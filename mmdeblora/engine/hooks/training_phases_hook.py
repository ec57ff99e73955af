"""TrainingPhasesHook: a multi-stage recipe in one run, switched at configured epochs.

Decoupled long-tail recipes (DRO-LT's official one: CE training, then the feature extractor
with the robustness loss on class-aware resampling, then the classifier alone) change the
sampler, the trainable set, the loss and the optimizer between stages. mmengine builds all
of these once, so this hook changes them at the start of each phase's first epoch:

- ``sampler``: the training loader is rebuilt around a new sampler (e.g. mmdet's
  ``ClassAwareSampler``), same dataset, batch size, workers, collate and seeds; it is
  swapped into the train loop before ``DistSamplerSeedHook`` sets its epoch;
- ``trainable``: of the parameters that trained at the start of the run, only those under
  these name prefixes train (a frozen foundation stays frozen);
- ``eval_modules``: modules kept in eval mode during the phase (frozen batch-norm
  statistics of a frozen feature extractor); re-applied before every iteration, since the
  loop calls ``model.train()`` each epoch;
- ``model_options``: passed to ``set_train_phase(**options)`` of every sub-module that has
  it (a head turning its extra loss on or off);
- ``optim_wrapper`` / ``param_scheduler``: the phase's own optimizer (keys replacing the
  config's, as ``DebLoRAHook.stage2_optim_wrapper``) and schedulers (none: a constant lr);
  without them the run's optimizer goes on over the new trainable set.

Everything is checked before the first iteration (a dry build of each sampler and
optimizer, with the random state restored after). Checkpoints record the phase; a resume
re-enters it before the optimizer state loads, so the state fits its groups.
"""
import copy
from typing import List, Optional, Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import DATA_SAMPLERS, HOOKS
from mmengine.runner import BaseLoop
from torch.utils.data import BatchSampler, DataLoader

from ..optim import build_schedulers, follow_trainable_set, stage2_optim_cfg
from .random_state_hook import capture_random_state, restore_random_state

PHASE_KEYS = ('begin', 'name', 'sampler', 'trainable', 'eval_modules', 'model_options',
              'optim_wrapper', 'param_scheduler')
CKPT_KEY = 'training_phase'


def check_phases(phases: Sequence[dict]) -> List[dict]:
    """The phases' shape: dicts of :data:`PHASE_KEYS`, ``begin`` >= 1 and increasing."""
    if not isinstance(phases, (list, tuple)) or not phases:
        raise TypeError(f'TrainingPhasesHook.phases must be a non-empty list, got {phases!r}')
    out, last = [], 0
    for i, phase in enumerate(phases):
        if not isinstance(phase, dict):
            raise TypeError(f'TrainingPhasesHook.phases[{i}] must be a dict, got {phase!r}')
        unknown = sorted(set(phase) - set(PHASE_KEYS))
        if unknown:
            raise KeyError(f'TrainingPhasesHook.phases[{i}]: unknown keys {unknown}; '
                           f'allowed {PHASE_KEYS}')
        begin = phase.get('begin')
        if isinstance(begin, bool) or not isinstance(begin, int) or begin <= last:
            raise ValueError(f'TrainingPhasesHook.phases[{i}].begin must be an integer '
                             f'epoch > {last} (phases in order, after epoch 0), got {begin!r}')
        for key in ('trainable', 'eval_modules'):
            val = phase.get(key)
            if val is not None and (isinstance(val, str) or not all(
                    isinstance(v, str) for v in val)):
                raise TypeError(f'TrainingPhasesHook.phases[{i}].{key} must be a list of '
                                f'names, got {val!r}')
        if phase.get('param_scheduler') is not None and phase.get('optim_wrapper') is None:
            raise ValueError(f'TrainingPhasesHook.phases[{i}]: param_scheduler needs the '
                             "phase's own optim_wrapper")
        last = begin
        out.append(dict(copy.deepcopy(phase), name=phase.get('name', f'phase{i + 1}')))
    return out


def under(name: str, prefixes: Sequence[str]) -> bool:
    """``name`` is one of ``prefixes`` or inside one (``head.fc`` holds ``head.fc.weight``)."""
    return any(name == p or name.startswith(p + '.') for p in prefixes)


def loader_with_sampler(runner, sampler_cfg: dict) -> DataLoader:
    """The run's training loader with another sampler: same dataset (not rebuilt), batch
    size, workers, collate and worker seeds; the sampler gets the run's seed."""
    old = runner.train_dataloader
    seed = None if runner._randomness_cfg.get('diff_rank_seed', False) else runner.seed
    sampler = DATA_SAMPLERS.build(copy.deepcopy(sampler_cfg),
                                  default_args=dict(dataset=old.dataset, seed=seed))
    kwargs = dict(num_workers=old.num_workers, collate_fn=old.collate_fn,
                  pin_memory=old.pin_memory, timeout=old.timeout,
                  worker_init_fn=old.worker_init_fn, generator=old.generator,
                  persistent_workers=old.persistent_workers,
                  prefetch_factor=old.prefetch_factor)
    loader_cfg = runner.cfg.get('train_dataloader') or {}
    batch_cfg = loader_cfg.get('batch_sampler')
    if batch_cfg is None and type(old.batch_sampler) is BatchSampler:
        return DataLoader(old.dataset, batch_size=old.batch_size, sampler=sampler,
                          drop_last=old.drop_last, **kwargs)
    if batch_cfg is None:
        raise TypeError('TrainingPhasesHook: the training loader has a batch sampler '
                        f'{type(old.batch_sampler).__name__} that is not in the config; '
                        'cannot rebuild it around a new sampler')
    batch_sampler = DATA_SAMPLERS.build(copy.deepcopy(dict(batch_cfg)), default_args=dict(
        sampler=sampler, batch_size=loader_cfg['batch_size']))
    return DataLoader(old.dataset, batch_sampler=batch_sampler, **kwargs)


@HOOKS.register_module()  # mmengine's root registry: visible from every scope
class TrainingPhasesHook(Hook):
    """Switch sampler, trainable set, model options and optimizer at each phase's epoch.

    Args:
        phases: one dict per phase after the first (the config as built), in order:
            ``begin`` (0-based epoch it starts at, required), ``name``, ``sampler`` (a
            sampler config), ``trainable`` (name prefixes, e.g. ``['head.fc']``),
            ``eval_modules`` (module names, e.g. ``['backbone']``), ``model_options``
            (for ``set_train_phase``), ``optim_wrapper``, ``param_scheduler``. A key left
            out keeps what the previous phase had (``eval_modules``: none).
    """

    priority = 'ABOVE_NORMAL'  # before DistSamplerSeedHook (NORMAL) sets the sampler's epoch

    def __init__(self, phases: Sequence[dict]) -> None:
        self.phases = check_phases(phases)
        self.current = -1  # index of the phase entered last (-1: the config's own)
        self._initial: Optional[List[str]] = None
        self._eval_modules: list = []  # the current phase's, resolved once at enter

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def phase_at(self, epoch: int) -> int:
        """Index of the phase that epoch ``epoch`` trains in (-1: before the first)."""
        return max([i for i, p in enumerate(self.phases) if p['begin'] <= epoch], default=-1)

    # ------------------------------------------------------------------ checks
    def before_run(self, runner) -> None:
        model = self._model(runner)
        self._initial = [n for n, p in model.named_parameters() if p.requires_grad]
        modules = dict(model.named_modules())
        receivers = [m for m in modules.values() if hasattr(m, 'set_train_phase')]
        for i, phase in enumerate(self.phases):
            where = f"TrainingPhasesHook phase {i} ({phase['name']})"
            for prefix in phase.get('trainable') or []:
                if not any(under(n, [prefix]) for n in self._initial):
                    raise ValueError(f'{where}: trainable prefix {prefix!r} matches no '
                                     'parameter that trains at the start of the run')
            if phase.get('trainable') is not None and not phase['trainable']:
                raise ValueError(f'{where}: trainable is empty; nothing would train')
            for name in phase.get('eval_modules') or []:
                if name not in modules:
                    raise ValueError(f'{where}: eval_modules names {name!r}, not a module '
                                     'of the model')
            if phase.get('model_options') and not receivers:
                raise ValueError(f'{where}: model_options given, but no module of '
                                 f'{type(model).__name__} has set_train_phase()')
        if isinstance(getattr(runner, '_train_loop', None), BaseLoop):  # training only
            state = capture_random_state()  # the dry builds must not shift the run
            try:
                self._dry_build(runner)
            finally:
                restore_random_state(state)
        if self.phases[-1]['begin'] >= runner.max_epochs:
            runner.logger.warning(f"TrainingPhasesHook: phase {self.phases[-1]['name']} "
                                  f"begins at epoch {self.phases[-1]['begin']} >= "
                                  f'max_epochs={runner.max_epochs}: it never runs')

    def _dry_build(self, runner) -> None:
        """Build each phase's sampler and optimizer once, so a wrong type or argument fails
        now rather than at the switch."""
        from mmengine.optim import build_optim_wrapper
        for i, phase in enumerate(self.phases):
            key = 'sampler'
            try:
                if phase.get('sampler') is not None:
                    loader_with_sampler(runner, phase['sampler'])
                key = 'optim_wrapper'
                if phase.get('optim_wrapper') is not None:
                    wrapper = build_optim_wrapper(runner.model, stage2_optim_cfg(
                        runner.cfg.optim_wrapper, phase['optim_wrapper']))
                    key = 'param_scheduler'
                    if phase.get('param_scheduler') is not None:
                        build_schedulers(runner, wrapper, phase['param_scheduler'])
            except Exception as e:
                raise ValueError(f'TrainingPhasesHook phase {i} ({phase["name"]}): {key} '
                                 f'cannot be built ({type(e).__name__}: {e})') from e

    # ------------------------------------------------------------------ schedule
    def before_train_epoch(self, runner) -> None:
        target = self.phase_at(runner.epoch)
        while self.current < target:
            self.enter(runner, self.current + 1)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        # the loop calls model.train() after before_train_epoch, so this is put back here
        for module in self._eval_modules:
            module.eval()

    def enter(self, runner, index: int) -> None:
        """Apply phase ``index``: sampler, trainable set, model options, optimizer."""
        phase, model = self.phases[index], self._model(runner)
        changes: List[str] = []
        if phase.get('sampler') is not None:
            loader = loader_with_sampler(runner, phase['sampler'])
            if len(loader) != len(runner.train_dataloader):
                runner.logger.warning(
                    f'TrainingPhasesHook: the {phase["sampler"].get("type")} loader has '
                    f'{len(loader)} iterations per epoch, the run was planned with '
                    f'{len(runner.train_dataloader)}: iteration counts and iteration-based '
                    'schedules no longer match the epochs')
            runner.train_loop.dataloader = loader
            changes.append(f"sampler {phase['sampler'].get('type')}")
        trainable = phase.get('trainable')
        if trainable is not None:
            initial = set(self._initial or [])
            for name, p in model.named_parameters():
                if name in initial:
                    p.requires_grad_(under(name, trainable))
            changes.append(f'training {list(trainable)}')
        options = phase.get('model_options')
        if options:
            for module in model.modules():
                if hasattr(module, 'set_train_phase'):
                    module.set_train_phase(**options)
            changes.append(f'model options {options}')
        if trainable is not None or phase.get('optim_wrapper') is not None:
            follow_trainable_set(runner, phase.get('optim_wrapper'),
                                 phase.get('param_scheduler'))
        self.current = index
        modules = dict(model.named_modules())
        self._eval_modules = [modules[name] for name in phase.get('eval_modules') or []]
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        evals = phase.get('eval_modules')
        runner.logger.info(
            f"TrainingPhasesHook: epoch {runner.epoch}, phase {phase['name']}: "
            + '; '.join(changes + ([f'eval mode {evals}'] if evals else []))
            + f'; {n:,} trainable parameters, lr {runner.optim_wrapper.get_lr()}')

    # ------------------------------------------------------------------ checkpoints
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[CKPT_KEY] = self.current

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """A resume re-enters the saved phase here, before the optimizer state loads (the
        loader too, as the train loop exists by then); a test-time or ``load_from`` load
        changes nothing."""
        if not runner._resume or not isinstance(getattr(runner, '_train_loop', None),
                                                BaseLoop):
            return  # load_from starts a new run at epoch 0: its phases come by epoch
        saved = int(checkpoint.get(CKPT_KEY, -1))
        if saved > self.current:
            runner.logger.info(f'TrainingPhasesHook: checkpoint of phase '
                               f"{self.phases[saved]['name']}, re-entering it")
        while self.current < saved:
            self.enter(runner, self.current + 1)
