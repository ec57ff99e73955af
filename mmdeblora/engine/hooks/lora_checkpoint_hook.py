"""Slim training checkpoints and adapter folders beside them, for LoRA backbones.

A LoRA run trains a few million parameters on a frozen base that, for SD v1.5, is 3.4 GB of
UNet and VAE; mmengine writes all of it at every checkpoint. With ``slim=True`` this hook
leaves out of each checkpoint the frozen base tensors that are still exactly the ones the
config builds from its weight files, and marks the checkpoint (``meta['slim_checkpoint']``
and the digests of what was left out, in the LoRABackbone's ``_extra_state``). Loading it
(``--resume``, ``load_from``, ``tools/test.py``, plain ``load_state_dict``) rebuilds the
base from the same files and puts it in place only after checking the digests, so a
checkpoint never loads silently onto other weights. A base with no weight files (random
init) cannot be rebuilt: the hook refuses to start rather than write checkpoints that
cannot be loaded.

With ``save_adapters=True`` the adapters are also written in peft's format next to each
checkpoint the CheckpointHook saves (``epoch_3.pth`` -> ``epoch_3_adapters/<module>/``), and
removed with it when ``max_keep_ckpts`` rotates the checkpoint out.

The slim logic itself (snapshot, leaving out, digests, filling in on load) is
``mmdeblora/models/backbones/slim.py``; this hook decides when it runs.
"""
import os.path as osp
import shutil
from typing import Dict, List, Optional, Tuple

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmrotate.registry import HOOKS

from mmdeblora.models.backbones import slim

SLIM_META = 'slim_checkpoint'
OMITTED_META = 'omitted_keys'


def lora_backbones(model) -> List[Tuple[str, object]]:
    """``(module path, LoRABackbone)`` of every LoRA backbone in a (wrapped) model."""
    from mmdeblora.models.backbones import LoRABackbone
    model = model.module if is_model_wrapper(model) else model
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRABackbone)]


def fill_slim_checkpoint(model, checkpoint: dict) -> int:
    """Complete a slim checkpoint's ``state_dict`` with the model's rebuilt, checked base
    (in place; 0 for a full checkpoint). For loaders that compare keys before loading."""
    state = checkpoint.get('state_dict', checkpoint)
    return sum(slim.fill_slim_state_dict(lora, state, f'{name}.')
               for name, lora in lora_backbones(model))


@HOOKS.register_module()
class LoRACheckpointHook(Hook):
    """Slim checkpoints without the frozen base, and peft adapter folders beside them.

    Args:
        slim: leave the frozen, file-rebuilt base out of every checkpoint.
        save_adapters: write each LoRABackbone's adapters (peft format) next to every
            checkpoint the CheckpointHook saves.
    """

    priority = 'LOWEST'  # after the CheckpointHook, whose last_ckpt names the new file

    def __init__(self, slim: bool = True, save_adapters: bool = False) -> None:
        if not (slim or save_adapters):
            raise ValueError('LoRACheckpointHook with slim=False and save_adapters=False '
                             'does nothing; remove it or enable one')
        self.slim, self.save_adapters = slim, save_adapters
        self._reference: Dict[str, Dict[str, tuple]] = {}
        self._last_seen: Optional[str] = None
        self._written: List[Tuple[str, str]] = []  # (checkpoint, adapter folder)

    # ------------------------------------------------------------------ set-up
    def before_run(self, runner) -> None:
        """Before any checkpoint is loaded: record the base as built from its files."""
        found = lora_backbones(runner.model)
        if not found:
            raise ValueError('LoRACheckpointHook: the model has no LoRABackbone; remove the '
                             'hook from custom_hooks')
        if not self.slim:
            return
        random = [n for n, lora in found if not slim.rebuild_sources(lora)]
        if random:
            raise ValueError(
                f'LoRACheckpointHook(slim=True): the frozen base of {random} is not built from '
                'weight files (random init), so a slim checkpoint could not be loaded back. Set '
                'the LoRABackbone\'s `pretrained` (or the wrapped backbone\'s), or use '
                'slim=False')
        for name, lora in found:
            self._reference[name] = slim.base_snapshot(lora)
        n = sum(len(r) for r in self._reference.values())
        runner.logger.info(f'LoRACheckpointHook: checkpoints leave out up to {n} frozen base '
                           'tensors, rebuilt on load from '
                           f'{[slim.rebuild_sources(lora) for _, lora in found]}')

    def before_train(self, runner) -> None:
        # after a resume, the restored last_ckpt is an old file: not ours to write for
        self._last_seen = runner.message_hub.get_info('last_ckpt')

    # ------------------------------------------------------------------ saving
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.slim:
            return
        state, info = checkpoint['state_dict'], {}
        for name, lora in lora_backbones(runner.model):
            keys = slim.make_slim(lora, state, f'{name}.', self._reference.get(name, {}))
            info[name] = dict(sources=slim.rebuild_sources(lora), left_out=len(keys), keys=keys)
        meta = checkpoint.setdefault('meta', {})
        meta[SLIM_META] = info
        # the key list CheckedRunner's fit check reads (mmdeblora.utils.checkpoint_fit): a
        # slim checkpoint is declared, not mistaken for one of another model
        meta[OMITTED_META] = list(meta.get(OMITTED_META, [])) + [
            k for entry in info.values() for k in entry['keys']]

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        self._write_adapters(runner)

    def after_train_epoch(self, runner) -> None:
        self._write_adapters(runner)

    def after_train(self, runner) -> None:
        self._write_adapters(runner)

    def _write_adapters(self, runner) -> None:
        if not self.save_adapters:
            return
        last = runner.message_hub.get_info('last_ckpt')
        if not last or last == self._last_seen:
            return
        self._last_seen = last
        if not is_main_process():
            return
        folder = osp.splitext(last)[0] + '_adapters'
        tmp = folder + '.tmp'
        shutil.rmtree(tmp, ignore_errors=True)
        for name, lora in lora_backbones(runner.model):
            lora.save_adapters(osp.join(tmp, name))
        shutil.rmtree(folder, ignore_errors=True)  # ours: the same checkpoint, saved again
        shutil.move(tmp, folder)
        runner.logger.info(f'LoRACheckpointHook: adapters of {osp.basename(last)} written to '
                           f'{folder}')
        self._written = [(c, f) for c, f in self._written if f != folder] + [(last, folder)]
        for ckpt, old in list(self._written):  # follow max_keep_ckpts
            if not osp.exists(ckpt) and osp.isdir(old):
                shutil.rmtree(old)
                self._written.remove((ckpt, old))

    # ------------------------------------------------------------------ loading
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Complete a slim checkpoint before the runner (or a key check) looks at it."""
        n = fill_slim_checkpoint(runner.model, checkpoint)
        if n:
            runner.logger.info(f'LoRACheckpointHook: slim checkpoint, {n} frozen base tensors '
                               'rebuilt from their files (digests checked)')
