"""Adapter folders in peft's format (read by real peft), the older format, all-or-nothing
loading, and ``pretrained`` that does not fit."""
import json
import logging

import pytest
import torch
from mmengine.logging import MMLogger
from mmrotate.registry import MODELS
from peft import LoraConfig, PeftModel, inject_adapter_in_model, set_peft_model_state_dict
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

import mmdeblora  # noqa: F401
from mmdeblora.models.backbones.adapter_io import lora_cfg
from mmdeblora.models.backbones.slim import rebuild_sources
from tests.models.backbones.test_lora_backbone import R18, build, plain_r18, randomize, run


@pytest.fixture
def x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def trained(seed: int = 0) -> 'torch.nn.Module':
    """A LoRABackbone with two adapters as if trained, 'second' frozen and inactive."""
    model = build(seed=seed)
    model.add_adapter('second', rank=2, alpha=6, activate=False)
    randomize(model, 'default', 1)
    randomize(model, 'second', 2)
    model.freeze_adapter('second')
    return model


def test_peft_loads_what_we_write(tmp_path, x):
    model = trained()
    model.save_adapters(str(tmp_path))
    with model.adapters_only(['default']):
        want_default = run(model, x)
    with model.adapters_only(['second']):
        want_second = run(model, x)

    # PeftModel on the plain backbone (same base weights): the folder and its sub-folder
    peft_model = PeftModel.from_pretrained(plain_r18(seed=0), str(tmp_path))
    for got, want in zip(run(peft_model, x), want_default):
        torch.testing.assert_close(got, want)
    peft_model.load_adapter(str(tmp_path / 'second'), adapter_name='second')
    peft_model.set_adapter('second')
    for got, want in zip(run(peft_model, x), want_second):
        torch.testing.assert_close(got, want)
    # our keys are exactly the ones peft itself saves
    ours = load_file(str(tmp_path / 'second' / 'adapter_model.safetensors'))
    assert set(ours) == set(get_peft_model_state_dict(peft_model, adapter_name='second'))
    assert peft_model.peft_config['second'].lora_alpha == 6

    # inject_adapter_in_model + set_peft_model_state_dict on a plain backbone
    plain = plain_r18(seed=0)
    inject_adapter_in_model(LoraConfig.from_pretrained(str(tmp_path)), plain)
    weights = load_file(str(tmp_path / 'adapter_model.safetensors'))
    result = set_peft_model_state_dict(plain, weights)
    assert not [k for k in result.unexpected_keys if 'lora_' in k]
    for got, want in zip(run(plain, x), want_default):
        torch.testing.assert_close(got, want)


def test_we_load_what_peft_writes(tmp_path, x):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=['conv1', 'conv2'])
    peft_model = PeftModel(plain_r18(seed=0), config)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for key, p in peft_model.named_parameters():
            if 'lora_' in key:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    want = run(peft_model, x)
    peft_model.save_pretrained(str(tmp_path))
    model = build(seed=0)
    model.load_adapters(str(tmp_path))  # a folder peft wrote: one adapter, 'default'
    for got, w in zip(run(model, x), want):
        torch.testing.assert_close(got, w)


def test_round_trip_restores_state_and_older_folders_still_load(tmp_path, x):
    model = trained()
    model.save_adapters(str(tmp_path / 'new'))
    fresh = build(seed=0)
    fresh.load_adapters(str(tmp_path / 'new'))
    assert fresh.adapter_names == ['default', 'second']
    assert fresh.active_adapters == ['default'] and not fresh.is_trainable('second')
    for got, want in zip(run(fresh, x), run(model, x)):
        assert torch.equal(got, want)

    # the format written before peft's: adapters.json + <name>.safetensors
    old = tmp_path / 'old'
    old.mkdir()
    for name in model.adapter_names:
        save_file({k: v.contiguous() for k, v in model.adapter_state_dict(name).items()},
                  str(old / f'{name}.safetensors'))
    (old / 'adapters.json').write_text(json.dumps(dict(
        active=['second'], adapters={n: dict(lora_cfg(model.peft_config[n]),
                                             trainable=n == 'default')
                                     for n in model.adapter_names})))
    legacy = build(seed=0)
    legacy.load_adapters(str(old))
    assert legacy.active_adapters == ['second'] and not legacy.is_trainable('second')
    with model.adapters_only(['second']):
        for got, want in zip(run(legacy, x), run(model, x)):
            assert torch.equal(got, want)


def _snapshot(model):
    return (model.adapter_names, model.active_adapters,
            {n: model.is_trainable(n) for n in model.adapter_names},
            {k: v.clone() for k, v in model.base.state_dict().items()})


def _assert_unchanged(model, before, x, want):
    names, active, trainable, state = before
    assert model.adapter_names == names and model.active_adapters == active
    assert {n: model.is_trainable(n) for n in names} == trainable
    now = model.base.state_dict()
    assert set(now) == set(state) and all(torch.equal(now[k], state[k]) for k in state)
    assert not [m for m in model.base.modules() if 'extra_new' in getattr(m, 'lora_A', {})]
    assert 'extra_new' not in getattr(model.base, 'peft_config', {})
    for got, w in zip(run(model, x), want):
        assert torch.equal(got, w)


def test_failed_load_leaves_the_model_as_it_was(tmp_path, x):
    source = trained(seed=0)
    source.add_adapter('extra_new', activate=False)
    randomize(source, 'extra_new', 3)
    source.add_adapter('zz_bad', rank=2, activate=False)
    source.save_adapters(str(tmp_path))
    # 'zz_bad' (loaded last) claims rank 4 while its tensors have rank 2
    cfg_path = tmp_path / 'zz_bad' / 'adapter_config.json'
    cfg_path.write_text(json.dumps(dict(json.loads(cfg_path.read_text()), r=4)))

    model = build(seed=0)
    randomize(model, 'default', 9)
    before, want = _snapshot(model), run(model, x)
    with pytest.raises(ValueError, match="zz_bad.*shape mismatch"):
        model.load_adapters(str(tmp_path))
    # 'default' was not overwritten, 'second' / 'extra_new' were not left behind
    _assert_unchanged(model, before, x, want)
    model.load_adapters(str(tmp_path), names=['default', 'second'])  # still usable
    assert model.adapter_names == ['default', 'second']


def test_non_finite_adapter_is_refused(tmp_path, x):
    trained().save_adapters(str(tmp_path))
    path = str(tmp_path / 'second' / 'adapter_model.safetensors')
    tensors = load_file(path)
    key = sorted(tensors)[0]
    tensors[key][0] = float('nan')
    save_file(tensors, path)
    model = build(seed=0)
    before, want = _snapshot(model), run(model, x)
    with pytest.raises(ValueError, match=r'non-finite.*refusing') as err:
        model.load_adapters(str(tmp_path))
    assert path in str(err.value) and key in str(err.value)
    _assert_unchanged(model, before, x, want)


def test_adapter_with_another_alpha_is_refused(tmp_path):
    trained().save_adapters(str(tmp_path))
    cfg_path = tmp_path / 'adapter_config.json'
    cfg_path.write_text(json.dumps(dict(json.loads(cfg_path.read_text()), lora_alpha=99)))
    with pytest.raises(ValueError, match="'default' was saved with .*'alpha': 99"):
        build(seed=0).load_adapters(str(tmp_path))


def test_broken_adapter_config_names_the_file(tmp_path, x):
    trained().save_adapters(str(tmp_path))
    cfg_path = tmp_path / 'second' / 'adapter_config.json'
    good = json.loads(cfg_path.read_text())
    text = json.dumps(good)
    cases = [(text[:len(text) // 2], 'not valid JSON'),                 # cut
             (json.dumps([good]), 'holds a JSON list, not an object'),
             (json.dumps({k: v for k, v in good.items() if k != 'r'}), 'missing r'),
             (json.dumps(dict(good, target_modules=None)), 'missing target_modules'),
             (json.dumps(dict(good, r='four')), "r='four'"),
             (json.dumps(dict(good, target_modules=[])), 'target_modules=[]')]
    model = build(seed=0)
    before, want = _snapshot(model), run(model, x)
    for content, problem in cases:
        cfg_path.write_text(content)
        with pytest.raises(ValueError) as err:
            model.load_adapters(str(tmp_path))
        msg = str(err.value)
        assert msg.startswith(f'{cfg_path}: ') and problem in msg, (problem, msg)
        assert 'save_adapters' in msg                               # what to do
        _assert_unchanged(model, before, x, want)
    index = tmp_path / 'mmdeblora_adapters.json'
    index.write_text('{"adapters": ')
    with pytest.raises(ValueError, match=rf'{index}: not valid JSON'):
        model.load_adapters(str(tmp_path))


def test_saved_adapters_get_the_umask_permissions(tmp_path):
    import os
    old = os.umask(0o027)
    try:
        trained().save_adapters(str(tmp_path / 'out'))
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / 'out').rglob('*')]
    assert sorted(p.name for p in files if p.is_file()) == [
        'adapter_config.json', 'adapter_config.json', 'adapter_model.safetensors',
        'adapter_model.safetensors', 'mmdeblora_adapters.json']         # no temporary left
    for p in files + [tmp_path / 'out']:
        assert os.stat(p).st_mode & 0o777 == (0o750 if p.is_dir() else 0o640), p


def _r50_file(tmp_path) -> str:
    from torchvision.models import resnet50
    torch.manual_seed(0)
    path = str(tmp_path / 'resnet50.pth')
    torch.save(resnet50().state_dict(), path)  # what torchvision://resnet50 gives
    return path


def test_pretrained_of_another_architecture_is_refused(tmp_path):
    path = _r50_file(tmp_path)
    with pytest.raises(ValueError, match=r'does not fit ResNet: \d+ tensor\(s\) of another '
                       r'shape .*missing from the file'):
        build(pretrained=path, pretrained_prefix=None)
    # by an explicit option: only what fits loads, and the log counts only that
    r50 = torch.load(path, weights_only=True)
    own = plain_r18().state_dict()
    fits = [k for k in own if k in r50 and r50[k].shape == own[k].shape]
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        model = build(pretrained=path, pretrained_prefix=None, pretrained_strict=False)
    finally:
        logger.removeHandler(handler)
    log = '\n'.join(r.getMessage() for r in records)
    assert f'LoRABackbone: loaded {len(fits)}/{len(own)} ResNet tensors' in log
    assert f'NOT loaded: {len(own) - len(fits)} of another shape' in log
    assert len(fits) < len(own)
    assert torch.equal(model.base.layer1[0].bn1.weight, r50['layer1.0.bn1.weight'])
    assert not torch.equal(model.base.layer1[0].conv1.base_layer.weight[:, :, :1, :1],
                           r50['layer1.0.conv1.weight'])


def test_torchvision_resnet50_file_loads_whole_into_mmdet_resnet50(tmp_path):
    path = _r50_file(tmp_path)
    r50 = torch.load(path, weights_only=True)
    torch.manual_seed(0)
    model = MODELS.build(dict(type='LoRABackbone', backbone=dict(R18, depth=50),
                              pretrained=path, pretrained_prefix=None, rank=4,
                              target_modules=['conv2']))
    state = model.base.state_dict()
    for key, value in r50.items():
        if not key.startswith('fc.'):
            key = key.replace('conv2.', 'conv2.base_layer.') if '.conv2.' in key else key
            assert torch.equal(state[key], value), key
    assert rebuild_sources(model) == [f'pretrained={path}']
