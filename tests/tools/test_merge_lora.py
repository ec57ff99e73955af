"""tools/merge_lora.py: adapters merged into base weights give the same detector features,
and no file is destroyed."""
import copy
import importlib.util
import os.path as osp
import shutil

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from tests.conftest import REPO, run_tool

# the SD one (the method's backbone); ResNet merging is covered in test_lora_backbone.py
CONFIGS = ['oriented_rcnn_sd_tiny_lora_toy.py']


def _build(cfg: Config):
    from mmrotate.registry import MODELS

    from mmdeblora.utils.launch import register_all
    register_all()
    init_default_scope('mmrotate')
    return MODELS.build(copy.deepcopy(cfg.model))


@pytest.mark.parametrize('name', CONFIGS)
def test_merged_checkpoint_matches_the_lora_model(name, tmp_path):
    cfg_path = osp.join(REPO, 'configs', 'baselines', name)
    torch.manual_seed(0)
    model = _build(Config.fromfile(cfg_path)).eval()
    lora = model.backbone
    lora.add_adapter('second', activate=False)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # adapters as if trained: non-zero B
        for key, p in model.named_parameters():
            if '.lora_' in key:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    ckpt = tmp_path / 'epoch_1.pth'
    torch.save({'meta': {'epoch': 1}, 'state_dict': model.state_dict()}, ckpt)

    out = tmp_path / 'merged' / 'model.pth'
    stale = tmp_path / 'adapters' / 'backbone' / 'stale.txt'  # an older run's outputs
    stale.parent.mkdir(parents=True)
    for path in (out, out.with_suffix('.py'), stale):
        path.parent.mkdir(exist_ok=True)
        path.write_text('from an older run')
    run_tool('merge_lora.py', cfg_path, str(ckpt), str(out),
             '--save-adapters', str(tmp_path / 'adapters'), '--force')

    merged_ckpt = torch.load(out, map_location='cpu', weights_only=True)
    keys = list(merged_ckpt['state_dict'])
    assert not [k for k in keys if '.lora_' in k or 'base_layer' in k]
    plain_cfg = Config.fromfile(str(tmp_path / 'merged' / 'model.py'))
    assert 'LoRABackbone' not in plain_cfg.pretty_text
    plain = _build(plain_cfg).eval()
    plain.load_state_dict(merged_ckpt['state_dict'], strict=True)

    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        torch.manual_seed(0)
        want = model.extract_feat(x)
        torch.manual_seed(0)
        got = plain.extract_feat(x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

    # the adapters alone (LoRABackbone.save_adapters' format) restore the LoRA model's
    folder = tmp_path / 'adapters' / 'backbone'
    torch.manual_seed(0)
    fresh = _build(Config.fromfile(cfg_path)).backbone
    fresh.load_adapters(str(folder))
    for name_ in ('default', 'second'):
        a, b = fresh.adapter_state_dict(name_), lora.adapter_state_dict(name_)
        assert all(torch.equal(a[k], b[k]) for k in b)

    # --force replaced the outputs of an older run, leaving no temporary file behind
    assert not stale.exists()
    assert sorted(p.name for p in (tmp_path / 'merged').iterdir()) == ['model.pth', 'model.py']
    assert not [p for p in tmp_path.rglob('.*')]


def test_a_model_without_lora_is_refused(tmp_path):
    cfg = osp.join(REPO, 'configs', 'baselines', 'oriented_rcnn_r18_toy.py')
    ckpt = tmp_path / 'plain.pth'
    torch.manual_seed(0)
    torch.save({'state_dict': _build(Config.fromfile(cfg)).state_dict()}, ckpt)
    proc = run_tool('merge_lora.py', cfg, str(ckpt), str(tmp_path / 'out.pth'), check=False)
    assert proc.returncode != 0 and 'no LoRABackbone' in proc.stderr


def _merge_tool():
    spec = importlib.util.spec_from_file_location(
        'merge_lora', osp.join(REPO, 'tools', 'merge_lora.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_destructive_outputs_are_refused_before_any_work(tmp_path):
    """issue 10: each of these destroyed a file; CHECKPOINT must stay byte-identical."""
    cfg = osp.join(REPO, 'configs', 'baselines', 'oriented_rcnn_r18_lora_toy.py')
    ckpt = tmp_path / 'epoch_1.pth'
    ckpt.write_bytes(b'the training checkpoint')
    (tmp_path / 'epoch_1.py').write_text('# an older merged config')
    (tmp_path / 'adapters').mkdir()
    (tmp_path / 'adapters' / 'default.safetensors').write_bytes(b'x')
    proc = run_tool('merge_lora.py', cfg, str(ckpt), str(ckpt),
                    '--save-adapters', str(tmp_path / 'adapters'), check=False)
    assert proc.returncode != 0
    message = proc.stderr.split('FileExistsError: refusing to overwrite')[-1]
    assert 'is CHECKPOINT itself' in message and 'epoch_1.py\' exists' in message
    assert 'adapters\' exists and is not empty' in message and '--force' in message
    assert ckpt.read_bytes() == b'the training checkpoint'
    shutil.rmtree(tmp_path / 'adapters')

    check = _merge_tool().check_outputs
    with pytest.raises(ValueError, match='ends in .py'):  # even with --force
        check(cfg, str(ckpt), str(tmp_path / 'merged.py'), None, True)
    user_cfg = tmp_path / 'my_cfg.py'
    user_cfg.write_text('# the user\'s own config')
    with pytest.raises(FileExistsError, match=r'OUT.py .*my_cfg.py\' exists'):
        check(cfg, str(ckpt), str(tmp_path / 'my_cfg.pth'), None, False)
    with pytest.raises(FileExistsError, match='is CONFIG itself'):
        check(str(user_cfg), str(ckpt), str(tmp_path / 'my_cfg.pth'), None, False)
    (tmp_path / 'adapters').mkdir()  # empty: fine
    check(cfg, str(ckpt), str(tmp_path / 'new.pth'), str(tmp_path / 'adapters'), False)
    (tmp_path / 'adapters' / 'default.safetensors').write_bytes(b'x')
    with pytest.raises(FileExistsError, match="--save-adapters .* is not empty"):
        check(cfg, str(ckpt), str(tmp_path / 'new.pth'), str(tmp_path / 'adapters'), False)
    check(cfg, str(ckpt), str(tmp_path / 'my_cfg.pth'), str(tmp_path / 'adapters'), True)


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    tool = _merge_tool()
    out = tmp_path / 'model.pth'
    out.write_bytes(b'old weights')

    def crash(tmp):
        with open(tmp, 'wb') as fh:
            fh.write(b'half of the new wei')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tool.write_atomic(str(out), crash)
    assert out.read_bytes() == b'old weights'
    assert [p.name for p in tmp_path.iterdir()] == ['model.pth']
    folder = tmp_path / 'adapters'
    folder.mkdir()
    (folder / 'a.safetensors').write_bytes(b'old')

    def crash_in_dir(tmp):
        crash(osp.join(tmp, 'b.safetensors'))

    with pytest.raises(KeyboardInterrupt):
        tool.replace_dir(str(folder), crash_in_dir)
    assert [p.name for p in folder.iterdir()] == ['a.safetensors']
    tool.replace_dir(str(folder), lambda tmp: open(osp.join(tmp, 'b'), 'w').close())
    assert [p.name for p in folder.iterdir()] == ['b']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['adapters', 'model.pth']


def test_outputs_get_the_umask_permissions_and_replace_symlinks(tmp_path):
    import os
    tool = _merge_tool()
    target = tmp_path / 'elsewhere.pth'
    target.write_bytes(b'not ours')
    out = tmp_path / 'model.pth'
    out.symlink_to(target)
    old = os.umask(0o022)
    try:
        tool.write_atomic(str(out), lambda tmp: torch.save({'a': 1}, tmp))
        tool.write_atomic(str(tmp_path / 'model.py'),
                          lambda tmp: Config(dict(a=1)).dump(tmp))   # goes by extension
        tool.replace_dir(str(tmp_path / 'adapters'),
                         lambda tmp: open(osp.join(tmp, 'b'), 'w').close())
    finally:
        os.umask(old)
    assert not out.is_symlink() and target.read_bytes() == b'not ours'
    assert os.stat(out).st_mode & 0o777 == 0o644                  # mkstemp gave 0600
    assert os.stat(tmp_path / 'model.py').st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / 'adapters').st_mode & 0o777 == 0o755   # mkdtemp gave 0700
    assert Config.fromfile(str(tmp_path / 'model.py')).a == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'adapters', 'elsewhere.pth', 'model.pth', 'model.py']


def test_a_slim_checkpoint_merges_with_the_base_from_pretrained(tmp_path, monkeypatch):
    """issue 20: a slim checkpoint (LoRACheckpointHook: the frozen base left out, to be
    rebuilt from the config's `pretrained`) failed with "20 of the 20 frozen base tensors
    differ": the tool dropped `pretrained`. Now the base is loaded from it as training did,
    checked, and the merged model computes what the LoRA model computed."""
    import logging

    from mmdeblora.engine.hooks import LoRACheckpointHook
    from tests.engine.hooks.test_lora_checkpoint_hook import r18_file
    pretrained = r18_file(tmp_path, seed=7)
    cfg_path = tmp_path / 'r18_lora.py'
    base = osp.join(REPO, 'configs', 'baselines', 'oriented_rcnn_r18_lora_toy.py')
    cfg_path.write_text(f'_base_ = {base!r}\n'
                        f'model = dict(backbone=dict(pretrained={pretrained!r}))\n')
    torch.manual_seed(0)
    model = _build(Config.fromfile(str(cfg_path))).eval()

    class Runner:  # what the hook reads
        logger = logging.getLogger('test_merge_lora')

    runner = Runner()
    runner.model = model
    hook = LoRACheckpointHook(slim=True)
    hook.before_run(runner)  # the base as built from `pretrained`
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # adapters and norms as if trained
        for key, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    checkpoint = {'meta': {'epoch': 1}, 'state_dict': model.state_dict()}
    hook.before_save_checkpoint(runner, checkpoint)
    assert len(checkpoint['meta']['omitted_keys']) >= 20
    ckpt = tmp_path / 'epoch_1.pth'
    torch.save(checkpoint, ckpt)

    tool, out = _merge_tool(), tmp_path / 'merged.pth'
    monkeypatch.setattr('sys.argv', ['merge_lora.py', str(cfg_path), str(ckpt), str(out)])
    tool.main()
    merged = torch.load(out, map_location='cpu', weights_only=True)['state_dict']
    plain = _build(Config.fromfile(str(tmp_path / 'merged.py'))).eval()
    plain.load_state_dict(merged, strict=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(plain.extract_feat(x), model.extract_feat(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

    # without the file it was trained from: says so, and which file
    monkeypatch.setattr('sys.argv', ['merge_lora.py', str(cfg_path), str(ckpt),
                                     str(tmp_path / 'again.pth'), '--cfg-options',
                                     f'model.backbone.pretrained={tmp_path}/gone.pth'])
    with pytest.raises(FileNotFoundError, match=r'slim checkpoint.*r18_seed7\.pth.*gone\.pth'):
        tool.main()
