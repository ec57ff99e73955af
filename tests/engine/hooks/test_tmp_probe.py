import copy
from tests.engine.hooks.test_deblora_hook import trained, make_runner  # noqa
import pytest


@pytest.mark.parametrize('w', [1.0, 10.0, 100.0, 'only'])
def test_probe(trained, w):
    runner, _, _ = trained
    model = runner.model
    batch = next(iter(runner.train_dataloader))
    sd = copy.deepcopy(model.state_dict())
    osd = copy.deepcopy(runner.optim_wrapper.state_dict())
    orig = model.loss
    if w == 'only':
        model._debias['loss_weight'] = 1.0
        def only(i, s):
            out = orig(i, s)
            return {'loss_deblora_feat': out['loss_deblora_feat']}
        model.loss = only
    else:
        model._debias['loss_weight'] = w
    for g in runner.optim_wrapper.optimizer.param_groups:
        g['lr'] = 0.02
    losses = []
    for _ in range(5):
        out = model.train_step(copy.deepcopy(batch), runner.optim_wrapper)
        losses.append(float(out['loss_deblora_feat']) / (1 if w == 'only' else w))
    print('W', w, losses)
    model.loss = orig
    model.load_state_dict(sd)
    runner.optim_wrapper.load_state_dict(osd)
