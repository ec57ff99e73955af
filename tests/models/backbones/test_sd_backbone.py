"""SDBackbone: a tiny random Stable Diffusion (diffusers) as a multi-scale dense backbone."""
import json
import os.path as osp
import socket

import pytest
import torch
from mmengine.config import Config
from mmrotate.registry import MODELS
from peft.tuners.lora import LoraLayer

import mmdeblora  # noqa: F401
from mmdeblora.models.backbones import SDBackbone

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
TINY = Config.fromfile(osp.join(REPO, 'configs', '_base_', 'models',
                                'sd_unet_tiny.py')).sd_unet_tiny.to_dict()


def tiny(seed: int = 0, **kw) -> SDBackbone:
    torch.manual_seed(seed)
    return MODELS.build(dict(TINY, **kw))


def feats(model, x, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(x)


@pytest.fixture
def x():
    return torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse) every attempt to open a network connection."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError('network access attempted in a test')
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)
    monkeypatch.setattr(socket, 'getaddrinfo', refuse)
    return attempts


def test_feature_shapes_and_strides(x):
    model = tiny().eval()
    out = feats(model, x)
    assert model.out_strides == [4, 8, 16, 32, 64]
    assert model.out_channels == [32, 32, 64, 64, 64]
    assert [tuple(f.shape) for f in out] == [
        (2, c, 128 // s, 128 // s) for c, s in zip(model.out_channels, model.out_strides)]
    assert all(f.dtype == torch.float32 and torch.isfinite(f).all() for f in out)
    # the stride-4 level is the stride-8 level upsampled
    torch.testing.assert_close(
        out[0], torch.nn.functional.interpolate(out[1], scale_factor=2, mode='bilinear'))
    native = tiny(stride4=None).eval()
    assert native.out_strides == [8, 16, 32, 64]
    assert [f.shape[-1] for f in feats(native, x)] == [16, 8, 4, 2]
    with pytest.raises(ValueError, match='divisible by 64'):
        model(torch.zeros(1, 3, 96, 96))


def test_features_are_the_up_blocks_before_upsampling(x):
    """The taps equal the decoder blocks' outputs computed by hand (no upsampler)."""
    model = tiny().eval()
    torch.manual_seed(0)
    with torch.no_grad():
        latents = model.encode(x)
        a, s = model.noise_scales
        noisy = a * latents + s * torch.randn_like(latents)
        seen = []
        hooks = [b.resnets[-1].register_forward_hook(lambda m, i, o: seen.append(o))
                 for b in model.unet.up_blocks]
        model.unet(noisy, torch.ones(2, dtype=torch.long),
                   encoder_hidden_states=model.context.expand(2, -1, -1))
        for h in hooks:
            h.remove()
    out = feats(model, x)
    # CrossAttn up blocks end with an attention after the last resnet: compare the
    # plain UpBlock2D (stride 64) exactly, and the others by shape
    assert torch.equal(out[-1], seen[0])
    assert [f.shape for f in out[1:]][::-1] == [f.shape for f in seen]


def test_loads_from_a_local_diffusers_folder(tmp_path, x, no_network):
    source = tiny(seed=5)
    source.unet.save_pretrained(str(tmp_path / 'unet'))
    source.vae.save_pretrained(str(tmp_path / 'vae'))
    loaded = tiny(seed=9, pretrained=str(tmp_path))
    want, got = source.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    for a, b in zip(feats(loaded.eval(), x), feats(source.eval(), x)):
        assert torch.equal(a, b)
    assert no_network == []


def test_missing_weights_are_a_clear_error_without_network(tmp_path, no_network):
    missing = str(tmp_path / 'stable-diffusion-v1-5')
    with pytest.raises(FileNotFoundError, match='does not exist.*pretrained'):
        tiny(pretrained=missing)
    (tmp_path / 'half' / 'unet').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r'half/vae'):
        tiny(pretrained=str(tmp_path / 'half'))
    with pytest.raises(ValueError, match='unet_cfg'):
        MODELS.build(dict(type='SDBackbone'))
    assert no_network == []


def _write_tiny_text_encoder(root) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    letters = 'abcdefghijklmnopqrstuvwxyz'
    vocab = {'<|startoftext|>': 0, '<|endoftext|>': 1}
    for ch in letters:
        vocab[ch] = len(vocab)
        vocab[ch + '</w>'] = len(vocab)
    (root / 'vocab.json').write_text(json.dumps(vocab))
    (root / 'merges.txt').write_text('#version: 0.2\n')
    tok = CLIPTokenizer(str(root / 'vocab.json'), str(root / 'merges.txt'),
                        model_max_length=8)
    tok.save_pretrained(str(root / 'tokenizer'))
    torch.manual_seed(0)
    CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=1, max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
        pad_token_id=1)).save_pretrained(str(root / 'text_encoder'))


def test_prompt_context_from_a_local_text_encoder(tmp_path, x, no_network):
    from transformers import CLIPTextModel, CLIPTokenizer
    _write_tiny_text_encoder(tmp_path)
    model = tiny(text_mode='prompt', prompt='an aerial image', text_encoder=str(tmp_path))
    tok = CLIPTokenizer.from_pretrained(str(tmp_path / 'tokenizer'))
    enc = CLIPTextModel.from_pretrained(str(tmp_path / 'text_encoder'))
    ids = tok(['an aerial image'], padding='max_length', max_length=8, truncation=True,
              return_tensors='pt').input_ids
    with torch.no_grad():
        want = enc(ids)[0]
    assert model.context.shape == (1, 8, 32) and not model.context.requires_grad
    torch.testing.assert_close(model.context, want)
    assert not torch.equal(feats(model.eval(), x)[-1], feats(tiny().eval(), x)[-1])
    assert no_network == []
    with pytest.raises(ValueError, match='local text encoder'):
        tiny(text_mode='prompt')
    learnable = tiny(text_mode='learnable')
    assert isinstance(learnable.context, torch.nn.Parameter)
    assert learnable.context.shape == (1, 4, 32)


def test_frozen_vae_stays_in_eval_mode():
    model = tiny().train()
    assert model.unet.training and not model.vae.training
    assert not any(p.requires_grad for p in model.vae.parameters())
    assert all(p.requires_grad for p in model.unet.parameters())


def test_gradient_checkpointing_gives_the_same_features_and_grads(x):
    plain, ckpt = tiny(seed=2).train(), tiny(seed=2, gradient_checkpointing=True).train()
    assert ckpt.unet.is_gradient_checkpointing
    grads = []
    for model in (plain, ckpt):
        torch.manual_seed(0)
        sum(f.mean() for f in model(x[:1])).backward()
        grads.append(model.unet.up_blocks[1].attentions[0].proj_out.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_test_time_noise_averaging(x):
    one = tiny(seed=2).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        a, b = one(x), one(x)
    three = tiny(seed=2, test_noise_draws=2).eval()
    for got, f1, f2 in zip(feats(three, x), a, b):
        torch.testing.assert_close(got, (f1 + f2) / 2)


def test_bf16_autocast_returns_float32(x):
    out = feats(tiny(autocast='bf16').eval(), x[:1])
    assert all(f.dtype == torch.float32 and torch.isfinite(f).all() for f in out)


def test_lora_targets_unet_attention_only(x):
    torch.manual_seed(0)
    model = MODELS.build(dict(type='LoRABackbone', backbone=TINY, rank=4))
    wrapped = [n for n, m in model.base.named_modules() if isinstance(m, LoraLayer)]
    assert wrapped and all(n.startswith('unet.') for n in wrapped)
    assert {n.rsplit('.', 1)[-1] for n in wrapped} == {'to_q', 'to_k', 'to_v', '0'}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all('.lora_' in n for n in trainable)
    # fresh adapters leave the features unchanged
    for got, want in zip(feats(model.eval(), x), feats(tiny().eval(), x)):
        assert torch.equal(got, want)
    wider = MODELS.build(dict(type='LoRABackbone', backbone=dict(TINY, lora_targets='all'),
                              rank=4))
    assert any(n.endswith('resnets.0.conv1') for n, m in wider.base.named_modules()
               if isinstance(m, LoraLayer))
