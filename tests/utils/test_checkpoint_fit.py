"""checkpoint_fit counts what really loads: key present and shape equal."""
import torch.nn as nn

from mmdeblora.utils import checkpoint_fit


def _model():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 16))


def test_counts_missing_unexpected_and_other_shapes():
    state = _model().state_dict()
    assert checkpoint_fit(_model(), state).fits
    state['2.weight'] = state['2.weight'][:11]          # another class count
    del state['0.bias']                                  # missing
    state['3.weight'] = state['2.bias']                  # the model has no such key
    del state['1.num_batches_tracked']                   # a BN counter: not counted
    fit = checkpoint_fit(_model(), state)
    assert not fit.fits
    assert fit.mismatched == [('2.weight', (11, 8), (16, 8))]
    assert fit.missing == ['0.bias'] and fit.unexpected == ['3.weight']
    assert len(fit.loaded) == 6 and fit.total == 8
    assert fit.summary().startswith('6 of 8 model tensors loaded; 1 with another shape '
                                    '(2.weight: checkpoint (11, 8) vs model (16, 8))')


def test_declared_omissions_and_module_prefix():
    state = {'module.' + k: v for k, v in _model().state_dict().items() if k.startswith('2.')}
    fit = checkpoint_fit(_model(), state, omitted=['0.', '1.'],
                         revise_keys=[(r'^module\.', '')])
    assert fit.fits and len(fit.loaded) == 2 and len(fit.omitted) == 6
    assert not checkpoint_fit(_model(), state).loaded  # without the revision nothing fits
