"""RandomStateHook: a resumed run draws the same random numbers as an uninterrupted one.

mmengine checkpoints the model, optimizer, schedulers and message hub, but no random state:
a resumed run re-seeds and then draws other numbers than the uninterrupted run would have
(augmentation, RPN / RoI sampling, LoRA dropout, the data loader's worker seeds, the
debLoRA switch). Taking the state when the checkpoint is written is not enough either:
validation runs after ``CheckpointHook`` and draws too (every data loader iterator draws its
base seed from torch's global generator), so the next epoch of an uninterrupted run starts
from another state than the one saved.

So the state is fixed at one point per epoch, in *both* runs: at ``after_train_epoch``
(priority ``VERY_HIGH``: after ``RuntimeInfoHook``, before every other hook,
``CheckpointHook`` included) the hook takes a snapshot of Python's ``random``, numpy's global
generator and torch's CPU and CUDA generators on every rank, and at ``before_train_epoch``
(again first, so before ``DebLoRAHook`` may run its switch) it restores that snapshot.
Checkpoints carry the snapshot (``checkpoint['random_state']``: tensors and plain Python,
loadable with ``weights_only=True``), so a run killed at any iteration and resumed from its last
epoch checkpoint, or from ``stage1_final.pth`` written at the debLoRA switch, starts the
next epoch exactly as the uninterrupted run did. The data loader's seeds (the sampler's
and mmengine's ``worker_init_fn``'s, which follow the run's seed and are fixed when the
loader is built, before a resume can restore the seed) are saved and restored too, and
persistent workers are restarted at each epoch (``restart_workers``), because their random
state lives in the worker processes, which neither run can save.

``CheckedRunner`` adds this hook to every run (config key ``exact_resume``), together with
mmengine's ``SyncBuffersHook`` under DDP: with ``broadcast_buffers=False`` (mmengine's DDP
default) each rank keeps its own batch-norm statistics, a checkpoint holds rank 0's only,
and a resumed run would start every rank from them; averaging the buffers at the end of
each epoch makes the ranks equal before the checkpoint is written (and the debLoRA switch
extracts every rank's features with the same model).

Exact for epoch-based loops resumed from epoch-end checkpoints. A checkpoint written in the
middle of an epoch (``CheckpointHook(by_epoch=False)``) makes mmengine's epoch loop repeat
the epoch's first iterations, and ``IterBasedTrainLoop`` skips data by re-reading it; both
are reported with a warning instead.
"""
import random
from functools import partial
from typing import List, Optional

import numpy as np
import torch
from mmengine import dist
from mmengine.hooks import Hook, SyncBuffersHook
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

STATE_KEY = 'random_state'
VERSION = 1


# ---------------------------------------------------------------------- one process
def capture_random_state() -> dict:
    """This process's random state as tensors and plain Python."""
    py_version, py_state, py_gauss = random.getstate()
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    cuda = None  # this process's device only: get_rng_state_all would open every GPU
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = torch.cuda.get_rng_state()
    return dict(
        python=dict(version=py_version, state=torch.tensor(py_state, dtype=torch.int64),
                    gauss=py_gauss),
        numpy=dict(keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                   has_gauss=int(has_gauss), gauss=float(gauss)),
        torch=torch.get_rng_state(), cuda=cuda)


def restore_random_state(state: dict) -> List[str]:
    """Set this process's generators to ``state``; returns what could not be restored."""
    py = state['python']
    random.setstate((py['version'], tuple(py['state'].tolist()), py['gauss']))
    npy = state['numpy']
    np.random.set_state(('MT19937', npy['keys'].cpu().numpy().astype(np.uint32), npy['pos'],
                         npy['has_gauss'], npy['gauss']))
    torch.set_rng_state(state['torch'].cpu())
    problems = []
    cuda = state.get('cuda')
    if cuda is not None:
        if torch.cuda.is_available():
            torch.cuda.set_rng_state(cuda.cpu())
        else:
            problems.append('CUDA generator: saved by a run with CUDA, none here')
    elif torch.cuda.is_available() and torch.cuda.is_initialized():
        problems.append('CUDA generator: none saved (the run that saved it had no CUDA)')
    return problems


# ---------------------------------------------------------------------- the loader
def loader_seeds(loader) -> dict:
    """The seeds a data loader was built with (sampler, mmengine's worker_init_fn)."""
    seeds = {}
    sampler = getattr(loader, 'sampler', None)
    batch_sampler = getattr(loader, 'batch_sampler', None)
    for s in (sampler, getattr(batch_sampler, 'sampler', None)):
        if isinstance(getattr(s, 'seed', None), int):
            seeds['sampler'] = s.seed
            break
    init_fn = getattr(loader, 'worker_init_fn', None)
    if isinstance(init_fn, partial) and isinstance(init_fn.keywords.get('seed'), int):
        seeds['worker_init_fn'] = init_fn.keywords['seed']
    return seeds


def set_loader_seeds(loader, seeds: dict) -> List[str]:
    """Give a data loader the seeds of the run being resumed; returns what changed."""
    changed = []
    now = loader_seeds(loader)
    if 'sampler' in seeds and now.get('sampler') != seeds['sampler']:
        for s in (loader.sampler, getattr(loader.batch_sampler, 'sampler', None)):
            if isinstance(getattr(s, 'seed', None), int):
                s.seed = seeds['sampler']
        changed.append(f'sampler seed {now.get("sampler")} -> {seeds["sampler"]}')
    if 'worker_init_fn' in seeds and now.get('worker_init_fn') != seeds['worker_init_fn']:
        fn = loader.worker_init_fn
        loader.worker_init_fn = partial(fn.func, *fn.args,
                                        **{**fn.keywords, 'seed': seeds['worker_init_fn']})
        changed.append(f'worker_init_fn seed {now.get("worker_init_fn")} -> '
                       f'{seeds["worker_init_fn"]}')
    return changed


def restart_persistent_workers(loader) -> bool:
    """Shut down a loader's persistent workers so that the next epoch starts new ones,
    seeded from the (restored) main process state as a resumed run's are."""
    it = getattr(loader, '_iterator', None)
    if it is None or not getattr(loader, 'persistent_workers', False):
        return False
    it._shutdown_workers()
    loader._iterator = None
    return True


# ---------------------------------------------------------------------- the hook
@HOOKS.register_module()
class RandomStateHook(Hook):
    """Snapshot the random state at the end of each epoch, restore it at the start of the
    next one, and carry it in checkpoints (see the module docstring for why).

    Args:
        restart_workers: restart persistent data loader workers at each epoch (their random
            state cannot be saved); what ``persistent_workers=False`` does anyway. Without
            it a resume with persistent workers is not exact.
    """

    priority = 'VERY_HIGH'

    def __init__(self, restart_workers: bool = True) -> None:
        if not isinstance(restart_workers, bool):
            raise TypeError(f'RandomStateHook.restart_workers must be a bool, got '
                            f'{restart_workers!r}')
        self.restart_workers = restart_workers
        self.snapshot: Optional[dict] = None  # dict(next_epoch, iter, world_size, ranks)
        self._seeds: Optional[dict] = None     # loader seeds of a resumed run
        self._active = True
        self._warned = False

    def _take(self, runner, next_epoch: int) -> dict:
        """Every rank's state (a collective call), for the epoch ``next_epoch``."""
        ranks = dist.all_gather_object(capture_random_state())
        return dict(version=VERSION, next_epoch=next_epoch, iter=runner.iter,
                    world_size=dist.get_world_size(), ranks=ranks)

    def _warn_once(self, runner, msg: str) -> None:
        if not self._warned:
            runner.logger.warning(f'RandomStateHook: {msg}')
            self._warned = True

    # ------------------------------------------------------------------ resume
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not runner._resume:  # load_from: another run's weights, not its random state
            return
        state = checkpoint.get(STATE_KEY)
        if state is None:
            self._warn_once(runner, 'the checkpoint has no random state (saved without '
                            'this hook): the resumed run draws other random numbers than '
                            'the interrupted run would have')
            return
        meta = checkpoint.get('meta', {})
        if state['world_size'] != dist.get_world_size():
            self._warn_once(runner, f'the checkpoint was saved by {state["world_size"]} '
                            f'process(es), this run has {dist.get_world_size()}: random '
                            'state not restored, the resume is not exact')
            return
        if meta.get('iter') != state['iter']:
            self._warn_once(runner, f'the checkpoint was saved at iteration '
                            f'{meta.get("iter")}, in the middle of an epoch (the epoch '
                            f'started at iteration {state["iter"]}): the epoch loop repeats '
                            'its first iterations, so the resume is not exact')
        self.snapshot = state
        self._seeds = state.get('loader')

    # ------------------------------------------------------------------ the fixed point
    def before_train(self, runner) -> None:
        if not isinstance(runner.train_loop, EpochBasedTrainLoop):
            self._active = False
            self._warn_once(runner, f'exact resume is implemented for EpochBasedTrainLoop '
                            f'only; with {type(runner.train_loop).__name__} the random '
                            'state is not restored')
            return
        if self._seeds:
            changed = set_loader_seeds(runner.train_dataloader, self._seeds)
            if changed:
                runner.logger.info('RandomStateHook: training data loader of the resumed '
                                   'run: ' + ', '.join(changed))
        if self.snapshot is None:
            self.snapshot = self._take(runner, runner.epoch)

    def before_train_epoch(self, runner) -> None:
        if not self._active:
            return
        snap = self.snapshot
        if snap is not None and snap['next_epoch'] == runner.epoch:
            problems = restore_random_state(snap['ranks'][dist.get_rank()])
            if problems:
                self._warn_once(runner, 'not restored: ' + '; '.join(problems))
        elif snap is not None:
            self._warn_once(runner, f'the random state saved for epoch '
                            f'{snap["next_epoch"] + 1} cannot start epoch {runner.epoch + 1}')
        if self.restart_workers:
            restart_persistent_workers(runner.train_dataloader)

    def after_train_epoch(self, runner) -> None:
        if self._active:
            self.snapshot = self._take(runner, runner.epoch + 1)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._active and self.snapshot is not None:
            checkpoint[STATE_KEY] = dict(self.snapshot,
                                         loader=loader_seeds(runner.train_dataloader))


# ---------------------------------------------------------------------- the default
def add_exact_resume_hooks(runner, options: dict) -> None:
    """What ``CheckedRunner`` does for every run (config key ``exact_resume``, read and
    checked there with the other guards): add ``RandomStateHook(**options)`` unless
    ``custom_hooks`` has one, and under DDP mmengine's ``SyncBuffersHook`` unless present.

    A runner-level default because mmengine replaces list-valued ``custom_hooks`` on
    inheritance: a hook added in a base config is lost in every config with its own.
    """
    if not any(isinstance(h, RandomStateHook) for h in runner.hooks):
        runner.register_hook(RandomStateHook(**options))
    if dist.get_world_size() > 1 and \
            not any(isinstance(h, SyncBuffersHook) for h in runner.hooks):
        runner.register_hook(SyncBuffersHook())
