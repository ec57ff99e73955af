"""LoRABackbone: peft LoRA around a registered backbone (ResNet-18 convs, ViT linears)."""
import json

import pytest
import torch
from mmrotate.registry import MODELS
from peft.tuners.lora import LoraLayer
from safetensors import safe_open

import mmdeblora  # noqa: F401
from mmdeblora.models.backbones import LoRABackbone

R18 = dict(type='mmdet.ResNet', depth=18, out_indices=(0, 1, 2, 3), frozen_stages=-1,
           norm_eval=False, init_cfg=None)
NORMS = r'(.*\.)?(bn\d|downsample\.1)\.(weight|bias)'


def build(seed: int = 0, **kw) -> LoRABackbone:
    torch.manual_seed(seed)
    cfg = dict(type='LoRABackbone', backbone=R18, rank=4, alpha=8,
               target_modules=['conv1', 'conv2'])
    cfg.update(kw)
    return MODELS.build(cfg)


def plain_r18(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = MODELS.build(R18)
    model.init_weights()
    return model


def randomize(model: LoRABackbone, name: str, seed: int) -> None:
    """Give an adapter non-zero weights (as if trained)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in model.base.named_parameters():
            if f'.{name}.' in key and '.lora_' in key:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def run(model, x):
    model.eval()
    with torch.no_grad():
        return [o.clone() for o in model(x)]


@pytest.fixture
def x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_trainable_params_are_adapters_plus_extras():
    model = build(trainable_extra=[NORMS])
    lora_numel, norm_numel = 0, 0
    for name, mod in model.base.named_modules():
        if isinstance(mod, LoraLayer):
            lora_numel += sum(p.numel() for p in mod.lora_A['default'].parameters())
            lora_numel += sum(p.numel() for p in mod.lora_B['default'].parameters())
        elif isinstance(mod, torch.nn.BatchNorm2d):
            norm_numel += sum(p.numel() for p in mod.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert lora_numel > 0 and norm_numel > 0
    assert trainable == lora_numel + norm_numel
    assert model.trainable_parameters() == dict(adapters=lora_numel, extra=norm_numel,
                                                total=trainable)
    # rank 4 on a 3x3 conv: A is (4, in, 3, 3), B is (out, 4, 1, 1)
    conv = model.base.layer1[0].conv1
    assert conv.lora_A['default'].weight.shape == (4, 64, 3, 3)
    assert conv.lora_B['default'].weight.shape == (64, 4, 1, 1)
    assert not conv.base_layer.weight.requires_grad


def test_base_weights_unchanged_after_optimizer_step(x):
    model = build()
    model.train()
    base = {k: v.clone() for k, v in model.base.named_parameters() if '.lora_' not in k}
    # (the stem: mmdet's zero_init_residual zeroes each block's last norm, so a block's
    # residual branch gets no gradient until that norm is trained)
    lora_b = model.base.conv1.lora_B['default'].weight
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        sum(o.square().mean() for o in model(x)).backward()
        opt.step()
    for k, v in model.base.named_parameters():
        if k in base:
            assert torch.equal(v, base[k]), k
    assert lora_b.abs().sum() > 0  # the adapter did learn


def test_fresh_adapter_output_equals_base_output(x):
    expected = run(plain_r18(seed=3), x)
    model = build(seed=3)
    for got, want in zip(run(model, x), expected):
        assert torch.equal(got, want)
    model.add_adapter('second', rank=2)
    assert model.active_adapters == ['default', 'second']
    for got, want in zip(run(model, x), expected):
        assert torch.equal(got, want)


def test_pretrained_loaded_into_base_before_injection(tmp_path, x):
    source = plain_r18(seed=7)
    path = str(tmp_path / 'detector.pth')
    # a detector checkpoint: backbone weights under `backbone.`, plus other modules
    torch.save({'meta': {}, 'state_dict': {
        **{f'backbone.{k}': v for k, v in source.state_dict().items()},
        'neck.conv.weight': torch.zeros(1)}}, path)
    model = build(seed=0, pretrained=path)
    assert torch.equal(model.base.layer1[0].conv1.base_layer.weight,
                       source.layer1[0].conv1.weight)
    model.init_weights()  # the runner's call must not re-initialise the base
    for got, want in zip(run(model, x), run(source, x)):
        assert torch.equal(got, want)


def test_pretrained_without_matching_keys_is_an_error(tmp_path):
    path = str(tmp_path / 'other.pth')
    torch.save({'state_dict': {'head.fc.weight': torch.zeros(2, 2)}}, path)
    with pytest.raises(KeyError, match='shares no key'):
        build(pretrained=path)


def test_merge_equivalence(x):
    model = build()
    model.add_adapter('second')
    randomize(model, 'default', 1)
    randomize(model, 'second', 2)
    before = run(model, x)
    merged = model.merge_and_unload()
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    assert set(merged.state_dict()) == set(plain_r18().state_dict())
    for got, want in zip(run(merged, x), before):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # the wrapper is untouched
    for got, want in zip(run(model, x), before):
        assert torch.equal(got, want)
    with model.adapters_only(['second']):
        only_second = run(model, x)
        merged_second = model.merge_and_unload()
    for got, want in zip(run(merged_second, x), only_second):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_adapter_save_load_round_trip(tmp_path, x):
    model = build(seed=0)
    model.add_adapter('second', rank=2, activate=False)
    randomize(model, 'default', 1)
    randomize(model, 'second', 2)
    model.freeze_adapter('second')
    files = model.save_adapters(str(tmp_path))
    # peft's layout: 'default' in the folder, every other adapter in a sub-folder
    assert files == [str(tmp_path / 'adapter_model.safetensors'),
                     str(tmp_path / 'second' / 'adapter_model.safetensors')]
    with safe_open(files[1], 'pt') as f:
        keys = list(f.keys())
        assert 'base_model.model.layer1.0.conv1.lora_B.weight' in keys
        assert f.get_tensor('base_model.model.layer1.0.conv1.lora_A.weight').shape[0] == 2
    assert json.loads((tmp_path / 'second' / 'adapter_config.json').read_text())['r'] == 2
    meta = json.loads((tmp_path / 'mmdeblora_adapters.json').read_text())
    assert meta['active'] == ['default']
    assert meta['trainable'] == dict(default=True, second=False)
    expected = run(model, x)

    other = build(seed=0)  # same base, different random LoRA A, no 'second'
    other.load_adapters(str(tmp_path))
    assert other.adapter_names == ['default', 'second']
    assert other.active_adapters == ['default']
    assert not other.is_trainable('second') and other.is_trainable('default')
    for name in ('default', 'second'):
        a, b = model.adapter_state_dict(name), other.adapter_state_dict(name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for got, want in zip(run(other, x), expected):
        assert torch.equal(got, want)
    # an adapter's tensors load under another name
    other.add_adapter('copy', rank=2, activate=False)
    other.load_adapter_state_dict(model.adapter_state_dict('second'), 'copy')
    with other.adapters_only(['copy']):
        copy_out = run(other, x)
    with model.adapters_only(['second']):
        for got, want in zip(copy_out, run(model, x)):
            assert torch.equal(got, want)
    with pytest.raises(ValueError, match='shape mismatch'):
        other.load_adapter_state_dict(model.adapter_state_dict('default'), 'copy')
    with pytest.raises(KeyError, match='mismatch'):
        other.load_adapter_state_dict({'conv1.lora_A.weight': torch.zeros(1)}, 'copy')


def test_two_adapters_switch_and_keep_trainability(x):
    base_out = run(build(seed=0), x)
    model = build(seed=0)
    model.add_adapter('deblora')
    randomize(model, 'default', 1)
    randomize(model, 'deblora', 2)
    both = run(model, x)
    model.set_active_adapters(['default'])
    only_default = run(model, x)
    model.set_active_adapters(['deblora'])
    only_deblora = run(model, x)
    assert not torch.allclose(only_default[-1], only_deblora[-1])
    assert not torch.allclose(both[-1], only_default[-1])
    with model.adapters_only([]):
        for got, want in zip(run(model, x), base_out):
            assert torch.equal(got, want)
    with model.adapters_only(['default']):
        for got, want in zip(run(model, x), only_default):
            assert torch.equal(got, want)
    assert model.active_adapters == ['deblora']  # restored after the context

    # trainability is remembered across switches (peft's set_adapter alone flips it on)
    model.freeze_adapter('default')
    model.set_active_adapters(['default', 'deblora'])
    conv = model.base.layer1[0].conv1
    assert not conv.lora_A['default'].weight.requires_grad
    assert conv.lora_A['deblora'].weight.requires_grad
    for got, want in zip(run(model, x), both):
        assert torch.equal(got, want)
    model.unfreeze_adapter('default')
    assert conv.lora_A['default'].weight.requires_grad
    with pytest.raises(KeyError, match='unknown adapter'):
        model.set_active_adapters(['nope'])


def test_target_pattern_matching_nothing_lists_existing_layers():
    with pytest.raises(ValueError, match=r'matches no Linear or Conv2d.*layer1\.0\.conv1'):
        build(target_modules=['qkv'])
    with pytest.raises(ValueError, match='matches no parameter'):
        build(trainable_extra=[r'.*\.gamma'])


def test_regex_target_modules():
    model = build(target_modules=r'layer1\.0\.conv[12]')
    wrapped = [n for n, m in model.base.named_modules() if isinstance(m, LoraLayer)]
    assert wrapped == ['layer1.0.conv1', 'layer1.0.conv2']


def test_linear_layers_of_a_vit(x):
    torch.manual_seed(0)
    vit_cfg = dict(type='mmpretrain.VisionTransformer', arch='deit-tiny', img_size=32,
                   patch_size=16, out_type='featmap')
    plain = MODELS.build(vit_cfg)
    plain.init_weights()
    torch.manual_seed(0)
    model = MODELS.build(dict(type='LoRABackbone', backbone=vit_cfg, rank=4,
                              target_modules=['qkv', 'proj']))
    layer = model.base.layers[0].attn.qkv
    assert isinstance(layer, LoraLayer) and isinstance(layer.base_layer, torch.nn.Linear)
    for got, want in zip(run(model, x), run(plain, x)):
        assert torch.equal(got, want)


def test_checkpoint_recreates_adapters_added_at_run_time(tmp_path, x):
    model = build(seed=0)
    model.add_adapter('deblora', rank=2, alpha=4)
    randomize(model, 'deblora', 3)
    model.freeze_adapter('default')
    model.set_active_adapters(['deblora'])
    path = tmp_path / 'model.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    state = torch.load(path, map_location='cpu', weights_only=True)['state_dict']
    fresh = build(seed=0)  # as built from the config: only 'default'
    fresh.load_state_dict(state, strict=True)
    assert fresh.adapter_names == ['default', 'deblora']
    assert fresh.active_adapters == ['deblora']
    assert not fresh.is_trainable('default') and fresh.is_trainable('deblora')
    assert fresh.base.layer1[0].conv1.scaling['deblora'] == 2.0
    for got, want in zip(run(fresh, x), run(model, x)):
        assert torch.equal(got, want)


def test_adapters_only_switches_the_lora_layers_only(x, monkeypatch):
    """adapters_only runs on every stage-2 step (issue 19, benchmarks/bench_stage2.py): it
    switches the peft layers without a walk over the base parameters, and every
    requires_grad stays what the remembered trainability says, inside and after."""
    model = build(seed=0, trainable_extra=[NORMS])
    model.add_adapter('deblora')
    randomize(model, 'default', 1)
    randomize(model, 'deblora', 2)
    model.freeze_adapter('default')  # stage 2: the stage-1 adapter frozen, the new one trains
    model.set_active_adapters(['default'])
    only_default = run(model, x)
    model.set_active_adapters(['default', 'deblora'])
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    layers = [m for m in model.base.modules() if isinstance(m, LoraLayer)]
    walks = []
    walk = model.base.named_parameters
    monkeypatch.setattr(model.base, 'named_parameters',
                        lambda *a, **k: walks.append(1) or walk(*a, **k))
    with model.adapters_only(['default']):
        assert all(layer.active_adapters == ['default'] for layer in layers)
        assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
        for got, want in zip(run(model, x), only_default):
            assert torch.equal(got, want)
    assert walks == []
    assert model.active_adapters == ['default', 'deblora']
    assert all(layer.active_adapters == ['default', 'deblora'] for layer in layers)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    with pytest.raises(KeyError, match='unknown adapter'):
        with model.adapters_only(['nope']):
            pass
    assert model.active_adapters == ['default', 'deblora']
