"""CheckedRunner: mmengine's Runner that refuses checkpoints that do not fit, stops
diverging runs and makes resumes exact. ``tools/train.py`` and ``tools/test.py`` use it unless
a config names another ``runner_type``; any config can ask for it with
``runner_type = 'CheckedRunner'``.
"""
import os.path as osp
from typing import Any, Dict, NamedTuple, Optional

from mmengine.dist import master_only
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from torch import nn

from mmdeblora.utils.atomic import atomic_path, atomic_write_text
from mmdeblora.utils.checkpoint_fit import CheckpointMismatchError, checkpoint_fit
from mmdeblora.utils.class_count_check import check_class_counts
from .hooks.atomic_checkpoint_hook import AtomicCheckpointHook
from .hooks.divergence_hook import DivergenceHook
from .hooks.random_state_hook import add_exact_resume_hooks

MISMATCH_MODES = ('error', 'warn')


class Guard(NamedTuple):
    """One guard of :class:`CheckedRunner`: who does it, its default, what it does."""
    by: str        # the hook or method that does it
    default: Any   # the value when the config does not set the key
    does: str      # what it guards against


# Every guard CheckedRunner adds, by the top-level config key that switches it: a dict
# default takes that hook's options (None or False: off), a bool default True / False,
# checkpoint_mismatch one of MISMATCH_MODES. The runner logs this table at start; it is
# the table of docs/reliability.md ("CheckedRunner's guards").
DEFAULT_GUARDS: Dict[str, Guard] = {
    'checkpoint_mismatch': Guard(
        'CheckedRunner.load_checkpoint / resume', 'error',
        'refuses a checkpoint that does not fit the model (a tensor missing, of another '
        "shape or without a place); 'warn' logs the count and goes on"),
    'divergence_guard': Guard(
        'DivergenceHook', {},
        'stops the run at a non-finite (or bounded) loss or gradient norm, before that '
        "iteration's checkpoint; never saves non-finite weights"),
    'exact_resume': Guard(
        'RandomStateHook (+ SyncBuffersHook under DDP)', {},
        'saves and restores the random state, so that a resumed run ends bit-identical '
        'to the uninterrupted one'),
    'class_count_check': Guard(
        'check_class_counts', True,
        "refuses a data set with more class names than a head's num_classes, before "
        'anything trains'),
    'component_checks': Guard(
        'check_placement() of each model part', True,
        'refuses a part where it cannot work (ResLTBBoxHead in a cascade RoI head), '
        'before anything trains'),
    'atomic_writes': Guard(
        'save_checkpoint, AtomicCheckpointHook, dump_config', True,
        'checkpoints, last_checkpoint and the config dump go to a temporary name and are '
        'renamed into place: a full disk leaves the previous file'),
}


def guard_setting(cfg, key: str) -> Any:
    """The config's value of guard ``key`` (:data:`DEFAULT_GUARDS`), checked: ``None`` when
    switched off, else a dict of the hook's options, ``True`` or the mode."""
    guard = DEFAULT_GUARDS[key]
    value = cfg.get(key, guard.default)
    if isinstance(guard.default, str):
        if value not in MISMATCH_MODES:
            raise ValueError(f'{key} must be one of {MISMATCH_MODES}, got {value!r}')
        return value
    if value is None or value is False:
        return None
    if isinstance(guard.default, bool):
        if value is not True:
            raise TypeError(f'{key} must be True or False, got {value!r}')
        return True
    if value is True:
        return {}
    if not isinstance(value, dict):
        hook = guard.by.split()[0]
        raise TypeError(f'{key} must be a dict of {hook} options, None or False, got '
                        f'{value!r}')
    return dict(value)


def guard_table(cfg) -> str:
    """The guards of a run as the log shows them: key = value, on / off, what does it."""
    lines = ['CheckedRunner guards (switch each with its top-level config key; '
             'docs/reliability.md):']
    for key, guard in DEFAULT_GUARDS.items():
        state = 'off' if guard_setting(cfg, key) is None else 'on '
        lines.append(f'  {state} {key}={cfg.get(key, guard.default)!r}: {guard.by}: '
                     f'{guard.does}')
    return '\n'.join(lines)


def check_components(model: nn.Module) -> None:
    """Let every part of ``model`` that has a ``check_placement(model, name)`` method refuse
    where it sits. A part cannot see its parent when it is built (a cascade RoI head builds
    its stages without telling them), so the check runs on the whole built model."""
    for name, module in model.named_modules():
        check = getattr(module, 'check_placement', None)
        if callable(check):
            check(model, name)


@RUNNERS.register_module()
class CheckedRunner(Runner):
    """``Runner`` with the guards of :data:`DEFAULT_GUARDS`, each switchable by its
    top-level config key and listed in the log when the runner starts.

    ``checkpoint_mismatch`` (``'error'``, the default, or ``'warn'``): ``load_from``,
    ``--resume`` and ``tools/test.py`` count what really loaded (key present *and* shape
    equal, :func:`mmdeblora.utils.checkpoint_fit.checkpoint_fit`) and raise
    :class:`CheckpointMismatchError` when a model tensor is missing or has another shape or
    a checkpoint tensor has no place in the model. ``'warn'`` (``--allow-mismatch`` in the
    tools) logs the count and goes on, for a deliberate partial load such as fine-tuning
    from a detector with other classes. A checkpoint of which nothing fits, and a
    ``--resume`` from another model (checked before the optimizer state, whose group sizes
    would give a bare ``ValueError``), always raise. Keys a checkpoint leaves out on purpose
    (e.g. a frozen base rebuilt from ``pretrained``) are listed in its
    ``meta['omitted_keys']`` (keys, or prefixes ending in ``.``) and not counted missing.

    ``divergence_guard`` (a dict of :class:`DivergenceHook` options, default ``{}``; ``None``
    or ``False`` switches it off): the hook is added to every run unless ``custom_hooks``
    already has one.

    ``exact_resume`` (a dict of ``RandomStateHook`` options, default ``{}``; ``None`` or
    ``False`` switches it off): the hook that saves and restores the random state, so that
    a run killed at any iteration and resumed ends bit-identical to the uninterrupted one,
    is added to every run unless ``custom_hooks`` already has one, and under DDP mmengine's
    ``SyncBuffersHook`` (:func:`.hooks.random_state_hook.add_exact_resume_hooks`).

    ``class_count_check`` (default ``True``): :func:`check_class_counts` compares the
    config's data set classes with every ``num_classes`` of the model.

    ``component_checks`` (default ``True``): :func:`check_components` lets each model part
    with a ``check_placement`` method refuse where it sits (``ResLTBBoxHead`` in a cascade).

    ``atomic_writes`` (default ``True``): checkpoints (``save_checkpoint``),
    ``last_checkpoint`` (:class:`AtomicCheckpointHook`) and the config dump go to a
    temporary name in their folder and are renamed into place (:mod:`mmdeblora.utils.atomic`):
    a full disk leaves the previous file, not a truncated one, and a symlink at the final
    path is replaced, not written through.

    Why a runner subclass and not a hook: hooks see a checkpoint in
    ``after_load_checkpoint``, *before* its state dict loads, when the model does not yet
    have the keys that loading creates (``LoRABackbone.set_extra_state`` adds a stage-2
    checkpoint's adapters; ``DebLoRAHook`` re-enters stage 2 in that same hook call).
    ``load_checkpoint`` is the one place that holds the checkpoint and the model *after*
    loading, and ``resume`` the one that knows a load is a resume. And a default hook must
    come from the runner: mmengine replaces list-valued ``custom_hooks`` on inheritance, so
    one added in a base config is lost in every config that sets its own.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._resuming = False
        super().__init__(*args, **kwargs)
        self.logger.info(guard_table(self.cfg))
        if guard_setting(self.cfg, 'component_checks'):
            # a last-stage ResLT head would train a whole schedule, then fail at validation
            check_components(self.model.module if is_model_wrapper(self.model)
                             else self.model)
        if guard_setting(self.cfg, 'class_count_check'):
            check_class_counts(self.cfg)  # classes past num_classes train as background

    # ------------------------------------------------------------------ hooks
    def register_hooks(self, default_hooks=None, custom_hooks=None) -> None:
        super().register_hooks(default_hooks, custom_hooks)
        exact = guard_setting(self.cfg, 'exact_resume')
        if exact is not None:
            add_exact_resume_hooks(self, exact)  # RandomStateHook (+ SyncBuffersHook)
        guard = guard_setting(self.cfg, 'divergence_guard')
        if guard is not None and \
                not any(isinstance(hook, DivergenceHook) for hook in self._hooks):
            self.register_hook(DivergenceHook(**guard))

    # ------------------------------------------------------------------ checkpoints
    def resume(self, filename: str, *args, **kwargs) -> None:
        self._resuming = True
        try:
            super().resume(filename, *args, **kwargs)
        except ValueError as err:
            if 'parameter group' not in str(err):
                raise
            raise CheckpointMismatchError(
                f'cannot resume from {filename}: its optimizer state does not fit this '
                f'run\'s optimizer ({err}); the model tensors fit, so the trainable set '
                'changed (LoRA targets, trainable_extra, frozen stages, paramwise_cfg?). '
                '--resume continues the same run; to start from these weights use '
                'load_from instead') from None
        finally:
            self._resuming = False

    def load_checkpoint(self, filename: str, map_location='cpu', strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]):  # noqa: B006 (upstream's)
        checkpoint = super().load_checkpoint(filename, map_location, strict, revise_keys)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        state = checkpoint.get('state_dict', checkpoint)
        omitted = (checkpoint.get('meta') or {}).get('omitted_keys', ())
        fit = checkpoint_fit(model, state, omitted, revise_keys)
        self._check_fit(filename, fit.summary(), fit.fits, bool(fit.loaded))
        return checkpoint

    def _check_fit(self, filename: str, summary: str, fits: bool, any_loaded: bool) -> None:
        if fits:
            self.logger.info(f'checkpoint {filename}: {summary}')
            return
        if self._resuming:
            raise CheckpointMismatchError(
                f'cannot resume from {filename}: it was saved by another model ({summary}). '
                '--resume continues the same run; to start from other weights use load_from '
                '(with checkpoint_mismatch=\'warn\' for a partial fit)')
        msg = f'checkpoint {filename} does not fit the model: {summary}'
        if not any_loaded:
            raise CheckpointMismatchError(msg + '; nothing would load (another model, or '
                                          'keys with another prefix?)')
        if guard_setting(self.cfg, 'checkpoint_mismatch') == 'warn':
            self.logger.warning(msg + ' (checkpoint_mismatch=\'warn\': going on with what '
                                'loaded)')
            return
        raise CheckpointMismatchError(
            msg + '. If a partial load is what you want (e.g. fine-tuning from a detector '
            'with other classes), pass --allow-mismatch to tools/train.py / tools/test.py '
            'or set checkpoint_mismatch=\'warn\' in the config')

    # ------------------------------------------------------------------ atomic writes
    def register_default_hooks(self, hooks: Optional[dict] = None) -> None:
        """A config's ``CheckpointHook`` (or the default one) becomes
        :class:`AtomicCheckpointHook`: same options, ``last_checkpoint`` renamed into place."""
        if not guard_setting(self.cfg, 'atomic_writes'):
            return super().register_default_hooks(hooks)
        hooks = dict(hooks or {})
        ckpt = hooks.get('checkpoint', dict(type='CheckpointHook', interval=1))
        upstream = ('CheckpointHook', 'mmengine.CheckpointHook', CheckpointHook)
        if isinstance(ckpt, dict) and ckpt.get('type') in upstream:
            hooks['checkpoint'] = dict(ckpt, type=AtomicCheckpointHook)
        super().register_default_hooks(hooks)

    @master_only
    def save_checkpoint(self, out_dir: str, filename: str,
                        file_client_args: Optional[dict] = None, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, meta: Optional[dict] = None,
                        by_epoch: bool = True, backend_args: Optional[dict] = None) -> None:
        """Upstream's, written to a temporary name in ``out_dir``, fsync'ed and renamed into
        place: a full disk leaves the previous file whole instead of a truncated one under
        the final name, a symlink there is replaced (not written through), and the file gets
        the umask's permissions. Other storage backends (``backend_args``, URIs) as
        upstream."""
        local = guard_setting(self.cfg, 'atomic_writes') and file_client_args is None \
            and isinstance(get_file_backend(out_dir, backend_args=backend_args), LocalBackend)
        options = dict(save_optimizer=save_optimizer, save_param_scheduler=save_param_scheduler,
                       meta=meta, by_epoch=by_epoch, backend_args=backend_args)
        if not local:
            return super().save_checkpoint(out_dir, filename, file_client_args, **options)
        with atomic_path(osp.join(out_dir, filename), fsync=True) as tmp:
            super().save_checkpoint(out_dir, osp.basename(tmp), **options)

    @master_only
    def dump_config(self) -> None:
        """Upstream's ``<work_dir>/<config name>``, renamed into place (a symlink there, a
        user's file, is replaced, not written through)."""
        if not guard_setting(self.cfg, 'atomic_writes'):
            return super().dump_config()
        if self.cfg.filename is not None:
            filename = osp.basename(self.cfg.filename)
        else:
            filename = f'{self.timestamp}.py'
        # Config.dump() gives the text Config.dump(file) writes for this file's format
        atomic_write_text(osp.join(self.work_dir, filename), self.cfg.dump())


def use_checked_runner(cfg, allow_mismatch: bool = False) -> None:
    """What the tools do: ``CheckedRunner`` unless the config names a runner, and
    ``checkpoint_mismatch='warn'`` when the user asked for it on the command line."""
    cfg.setdefault('runner_type', 'CheckedRunner')
    if allow_mismatch:
        cfg.checkpoint_mismatch = 'warn'
