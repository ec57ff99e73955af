"""AtomicCheckpointHook: mmengine's ``CheckpointHook`` with ``last_checkpoint`` written
atomically.

Upstream writes ``<work_dir>/last_checkpoint`` with a plain ``open(..., 'w')``: a symlink
there is written through (the file it points to is overwritten) and a full disk leaves it
empty, so ``--resume`` (auto) finds no checkpoint. Here it goes to a temporary name in the
same folder and is renamed into place (:mod:`mmdeblora.utils.atomic`). The checkpoint file
itself is written atomically by ``CheckedRunner.save_checkpoint``, which also puts this hook
in place of a config's ``CheckpointHook``.
"""
import os
import os.path as osp
import uuid

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

from mmdeblora.utils.atomic import atomic_write_text


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same options) whose ``last_checkpoint`` file is replaced
    atomically instead of written in place."""

    def _save_checkpoint_with_step(self, runner, step, meta):
        """Upstream's method, unchanged, with ``last_checkpoint`` moved aside first (so its
        in-place write creates a new file instead of writing through a link, and a failed
        write gives the old file back) and then replaced atomically."""
        path = osp.join(runner.work_dir, 'last_checkpoint')
        main = is_main_process()
        aside = None
        if main and osp.lexists(path):
            aside = osp.join(runner.work_dir, f'.last_checkpoint.{uuid.uuid4().hex[:12]}.old')
            os.replace(path, aside)  # a symlink moves as a link; its target is untouched
        try:
            super()._save_checkpoint_with_step(runner, step, meta)
        except BaseException:
            if aside is not None:
                os.replace(aside, path)
            raise
        if main:
            atomic_write_text(path, self.last_ckpt)
            if aside is not None:
                os.remove(aside)
