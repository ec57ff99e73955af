"""Slim checkpoints (frozen base left out, rebuilt and checked on load) and adapter folders
next to each checkpoint (LoRACheckpointHook)."""
import json
import os.path as osp

import pytest
import torch
from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict

import mmdeblora  # noqa: F401
from mmdeblora.engine.hooks import LoRACheckpointHook
from mmdeblora.models.backbones.slim import base_snapshot, make_slim, rebuild_sources
from tests.conftest import REPO, run_tool, toy_options
from tests.models.backbones.test_lora_backbone import NORMS, build, plain_r18, randomize, run

R18_LORA = osp.join(REPO, 'configs', 'baselines', 'oriented_rcnn_r18_lora_toy.py')
HOOK = ['default_hooks.lora_checkpoint.type=LoRACheckpointHook',
        'default_hooks.lora_checkpoint.save_adapters=True']
ONE_ITER = ['train_dataloader.dataset.indices=4', 'val_dataloader.dataset.indices=2',
            'test_dataloader.dataset.indices=2']


@pytest.fixture
def x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def r18_file(tmp_path, seed: int) -> str:
    path = str(tmp_path / f'r18_seed{seed}.pth')
    torch.save(plain_r18(seed=seed).state_dict(), path)
    return path


def test_slim_state_dict_loads_back_only_onto_the_same_base(tmp_path, x):
    path = r18_file(tmp_path, seed=7)
    model = build(seed=0, pretrained=path, trainable_extra=[NORMS])
    reference = base_snapshot(model)  # as built from the file
    randomize(model, 'default', 1)
    model.train()
    model(x)  # BatchNorm running statistics move
    with torch.no_grad():
        model.base.layer1[0].bn1.weight.add_(1.0)  # a trained norm
    # a write that torch's version counter does not see is still noticed (checksum)
    model.base.layer3[0].conv1.base_layer.weight.data[0, 0, 0, 0] += 1.0
    state = model.state_dict()
    left_out = make_slim(model, state, '', reference)

    conv = 'base.layer1.0.conv1.base_layer.weight'
    assert conv in left_out and conv not in state
    assert 'base.layer1.0.conv1.lora_A.default.weight' in state  # adapters kept
    for changed in ('base.layer1.0.bn1.running_mean', 'base.layer1.0.bn1.weight',
                    'base.layer3.0.conv1.base_layer.weight'):
        assert changed in state and changed not in left_out
    assert 'base.layer4.1.conv2.base_layer.weight' in left_out  # frozen, never changed
    full = model.state_dict()
    assert sum(v.numel() for v in state.values()) < 0.2 * sum(
        v.numel() for v in full.values())

    want = run(model, x)
    fresh = build(seed=3, pretrained=path, trainable_extra=[NORMS])  # the same file
    fresh.load_state_dict(dict(state), strict=True)
    for got, w in zip(run(fresh, x), want):
        assert torch.equal(got, w)
    fresh = build(seed=4, pretrained=path, trainable_extra=[NORMS])
    mmengine_load_state_dict(fresh, dict(state), strict=True)  # the runner's loader
    for got, w in zip(run(fresh, x), want):
        assert torch.equal(got, w)

    other = build(seed=0, pretrained=r18_file(tmp_path, seed=8), trainable_extra=[NORMS])
    with pytest.raises(RuntimeError, match=r'slim checkpoint: \d+ of the \d+ frozen base'):
        other.load_state_dict(dict(state), strict=False)
    with pytest.raises(RuntimeError, match='slim checkpoint'):
        build(seed=0).load_state_dict(dict(state), strict=False)  # random-init base


def test_random_init_base_cannot_be_slim():
    model = build(seed=0)
    assert rebuild_sources(model) == [] and base_snapshot(model) == {}

    class Runner:  # what before_run reads
        def __init__(self, model):
            self.model = model

    with pytest.raises(ValueError, match=r'not built from weight files \(random init\)'):
        LoRACheckpointHook(slim=True).before_run(Runner(torch.nn.Sequential(model)))
    LoRACheckpointHook(slim=False, save_adapters=True).before_run(
        Runner(torch.nn.Sequential(model)))  # adapters only: fine
    with pytest.raises(ValueError, match='no LoRABackbone'):
        LoRACheckpointHook().before_run(Runner(torch.nn.Linear(1, 1)))


@pytest.mark.slow
def test_slim_training_resume_and_test(toy_root, tmp_path):
    """tools/train.py with the hook, --resume from a slim checkpoint, tools/test.py on it."""
    pretrained = r18_file(tmp_path, seed=7)
    work = tmp_path / 'work'
    opts = toy_options(toy_root, [*ONE_ITER, *HOOK, f'model.backbone.pretrained={pretrained}',
                                  'train_cfg.val_interval=5'])
    run_tool('train.py', R18_LORA, '--work-dir', str(work), *opts)
    ckpt = torch.load(work / 'epoch_1.pth', map_location='cpu', weights_only=True)
    state, meta = ckpt['state_dict'], ckpt['meta']
    left = meta['slim_checkpoint']['backbone']['keys']
    assert meta['slim_checkpoint']['backbone']['sources'] == [f'pretrained={pretrained}']
    assert 'backbone.base.layer2.0.conv1.base_layer.weight' in left
    assert not [k for k in left if k in state] and set(left) <= set(meta['omitted_keys'])
    assert [k for k in state if '.lora_A.default.' in k] and 'neck.lateral_convs.0.conv.weight' \
        in state
    # the adapters of that checkpoint, in peft's format, next to it
    adapters = work / 'epoch_1_adapters' / 'backbone'
    assert json.loads((adapters / 'adapter_config.json').read_text())['r'] == 8
    assert (adapters / 'adapter_model.safetensors').is_file()

    # --resume from the slim checkpoint: the run goes on to epoch 2
    resumed = run_tool('train.py', R18_LORA, '--work-dir', str(work), '--resume',
                       *opts[:-1], 'train_cfg.max_epochs=2', opts[-1])
    log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 1' in log and 'Epoch(train) [2][1/1]' in log
    assert 'slim checkpoint' in log and 'rebuilt from their files' in log
    assert (work / 'epoch_2.pth').is_file() and (work / 'epoch_2_adapters').is_dir()

    # tools/test.py on it evaluates the same model
    test = run_tool('test.py', R18_LORA, str(work / 'epoch_2.pth'), '--work-dir',
                    str(tmp_path / 'test'), *opts)
    assert 'dota/mAP' in test.stdout + test.stderr
