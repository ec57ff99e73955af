"""Tail replay: more calibrated instances for stage 2's feature loss, none for its task loss.

On a long-tailed set most stage-2 batches hold no calibrated instance, so the feature loss
pulls on few steps (the detection benchmark: 159 tail objects, about 2 a batch of a
76-batch epoch; docs/deblora.md). ``TailReplay`` draws, for every stage-2 step, ``per_step``
more training images that hold at least one instance of a calibrated class and appends
them to the batch, each marked ``deblora_replay`` in its metainfo. The model
(``DebiasMixin.debias_loss_parts``) leaves marked images out of the upstream task loss and
adds only their calibrated instances to the feature loss's calibrated mean: the task loss,
the held (uncalibrated) instances and the logged batch gaps are those of the original batch.

The images go through the training pipeline (its random augmentation included) with a
random state of their own, swapped in for each draw and out again, so the run's own data
order and augmentations are the same as without replay; with lambda 0 the model skips the
replay pass, so a lambda-0 control with replay equals one without (tested). The replay's own
draw order is not restored on resume (it starts again from its seed).
"""
import random
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

REPLAY_KEY = 'deblora_replay'


def calibrated_indices(dataset, calibrated: Sequence[bool]) -> List[int]:
    """Indices of the dataset's samples that hold a non-ignored instance of a calibrated
    class (from the data infos, ``sample_labels``: no image is loaded; mmengine's dataset
    wrappers included)."""
    from mmdeblora.datasets.class_stats import sample_labels
    if not callable(getattr(dataset, 'get_data_info', None)):
        raise TypeError(f'DebLoRAHook.replay needs a training dataset with get_data_info '
                        f'(mmengine datasets and their wrappers have it), got '
                        f'{type(dataset).__name__}')
    if hasattr(dataset, 'full_init'):
        dataset.full_init()
    cal = {c for c, flag in enumerate(calibrated) if flag}
    return [i for i in range(len(dataset)) if cal.intersection(sample_labels(dataset, i))]


def check_replay_source(dataset) -> None:
    """Before the first iteration: the training set's labels can be read without loading
    an image, so that a dataset the replay cannot index fails now, not at the switch. (The
    batch format ``TailReplay.extend`` needs is the one the feature extraction's dry run
    already checks: the extraction loader shares the training collate function.)"""
    if not calibrated_indices(dataset, [True] * len(dataset.metainfo.get('classes', ()))):
        raise ValueError('DebLoRAHook.replay: no training sample holds an annotated '
                         'instance')


def is_replay(sample) -> bool:
    return bool(getattr(sample, 'metainfo', {}).get(REPLAY_KEY, False))


@contextmanager
def _own_random_state(state: Optional[dict]) -> Iterator[list]:
    """Run the block with ``state`` (None: the current one) as the process's random state;
    the block's final state is left in the yielded list, the outer state is restored."""
    # (imported here, not at the top: mmdeblora.engine.hooks imports the engine package)
    from mmdeblora.engine.hooks.random_state_hook import capture_random_state, restore_random_state
    outer = capture_random_state()
    out: list = []
    try:
        if state is not None:
            restore_random_state(state)
        yield out
        out.append(capture_random_state())
    finally:
        restore_random_state(outer)


class TailReplay:
    """An endless, reshuffled stream of the training images that hold a calibrated instance.

    Args:
        dataset: the training dataset (its pipeline is used as it is).
        calibrated: per class, whether it is calibrated.
        per_step: images appended to every stage-2 batch.
        collate_fn: the training loader's (so that the items match the batch's).
        seed: the replay's own random state (sampler and pipeline).
    """

    def __init__(self, dataset, calibrated: Sequence[bool], per_step: int, collate_fn,
                 seed: int = 0) -> None:
        self.indices = calibrated_indices(dataset, calibrated)
        if not self.indices:
            raise ValueError('DebLoRAHook.replay: no training sample holds an instance of a '
                             'calibrated class')
        self.per_step = per_step
        gen = torch.Generator().manual_seed(seed)
        self._loader = DataLoader(Subset(dataset, self.indices), batch_size=per_step,
                                  shuffle=True, generator=gen, collate_fn=collate_fn,
                                  num_workers=0)
        self._iter = None
        with _own_random_state(None) as final:  # the pipeline's generators, for the replay
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
        self._state = final[0]

    def _next(self) -> dict:
        if self._iter is not None:
            try:
                return next(self._iter)
            except StopIteration:
                pass
        self._iter = iter(self._loader)
        return next(self._iter)

    def draw(self) -> dict:
        """The next ``per_step`` replay images, collated, drawn with the replay's own random
        state (the run's is left as it was)."""
        items: dict = {'inputs': [], 'data_samples': []}
        with _own_random_state(self._state) as final:
            while len(items['data_samples']) < self.per_step:  # a short last batch: refill
                batch = self._next()
                for key in items:
                    items[key].extend(batch[key])
        self._state = final[0]
        for key in items:
            items[key] = items[key][:self.per_step]
        return items

    def extend(self, data_batch: Optional[dict]) -> None:
        """Append the next replay images to a collated training batch, in place, marked."""
        if not isinstance(data_batch, dict) or not {'inputs', 'data_samples'} <= set(data_batch):
            raise TypeError('DebLoRAHook.replay needs batches collated as dict(inputs=[...], '
                            f'data_samples=[...]), got {type(data_batch).__name__}')
        extra = self.draw()
        for sample in extra['data_samples']:
            sample.set_metainfo({REPLAY_KEY: True})
        for key in ('inputs', 'data_samples'):
            data_batch[key] = list(data_batch[key]) + list(extra[key])
