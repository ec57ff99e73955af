"""CheckedRunner: mmengine's Runner that refuses checkpoints that do not fit, stops
diverging runs and makes resumes exact. ``tools/train.py`` and ``tools/test.py`` use it unless
a config names another ``runner_type``; any config can ask for it with
``runner_type = 'CheckedRunner'``.
"""
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmdeblora.models.roi_heads import check_reslt_placement
from mmdeblora.utils.checkpoint_fit import CheckpointMismatchError, checkpoint_fit
from .hooks.divergence_hook import DivergenceHook
from .hooks.random_state_hook import add_exact_resume_hooks

MISMATCH_MODES = ('error', 'warn')


@RUNNERS.register_module()
class CheckedRunner(Runner):
    """``Runner`` with three guards, each switchable by a top-level config key.

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
        # a last-stage ResLT head would train a whole schedule, then fail at validation
        check_reslt_placement(self.model)
        mode = self.cfg.get('checkpoint_mismatch', 'error')
        if mode not in MISMATCH_MODES:
            raise ValueError(f'checkpoint_mismatch must be one of {MISMATCH_MODES}, got '
                             f'{mode!r}')

    # ------------------------------------------------------------------ divergence
    def register_hooks(self, default_hooks=None, custom_hooks=None) -> None:
        super().register_hooks(default_hooks, custom_hooks)
        add_exact_resume_hooks(self)  # RandomStateHook (+ SyncBuffersHook under DDP)
        guard = self.cfg.get('divergence_guard', {})
        if guard is None or guard is False:
            return
        if guard is True:
            guard = {}
        if not isinstance(guard, dict):
            raise TypeError(f'divergence_guard must be a dict of DivergenceHook options, '
                            f'None or False, got {guard!r}')
        if not any(isinstance(hook, DivergenceHook) for hook in self._hooks):
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
        if self.cfg.get('checkpoint_mismatch', 'error') == 'warn':
            self.logger.warning(msg + ' (checkpoint_mismatch=\'warn\': going on with what '
                                'loaded)')
            return
        raise CheckpointMismatchError(
            msg + '. If a partial load is what you want (e.g. fine-tuning from a detector '
            'with other classes), pass --allow-mismatch to tools/train.py / tools/test.py '
            'or set checkpoint_mismatch=\'warn\' in the config')


def use_checked_runner(cfg, allow_mismatch: bool = False) -> None:
    """What the tools do: ``CheckedRunner`` unless the config names a runner, and
    ``checkpoint_mismatch='warn'`` when the user asked for it on the command line."""
    cfg.setdefault('runner_type', 'CheckedRunner')
    if allow_mismatch:
        cfg.checkpoint_mismatch = 'warn'
