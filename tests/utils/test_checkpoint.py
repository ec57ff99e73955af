"""Checkpoint loading: weights only whatever the environment says, and errors that say what
is wrong with a file (never torch's advice to switch the check off)."""
import io
import os
import random
import subprocess
import sys

import pytest
import torch
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

from mmdeblora.utils import CheckpointFileError, register_safe_checkpoint_loader

EVIL = '''
import os, sys, torch
class Evil:
    def __reduce__(self):
        return (os.system, ('touch ' + sys.argv[2],))
torch.save({'state_dict': {}, 'meta': Evil()}, sys.argv[1])
'''
UNSAFE_ADVICE = ('weights_only=False', '`weights_only` set to `False`')


@pytest.fixture
def evil(tmp_path):
    """A checkpoint whose unpickling runs ``touch <marker>``."""
    path, marker = tmp_path / 'evil.pth', tmp_path / 'PWNED'
    subprocess.run([sys.executable, '-c', EVIL, str(path), str(marker)], check=True)
    return str(path), marker


def test_malicious_checkpoint_runs_code_through_plain_mmengine(evil):
    """The control: why the loader exists. Without mmdeblora, mmengine's loader leaves
    ``weights_only`` unset and TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 lets the file run code."""
    path, marker = evil
    code = ('import sys; from mmengine.runner.checkpoint import _load_checkpoint\n'
            '_load_checkpoint(sys.argv[1])\n')
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')
    subprocess.run([sys.executable, '-c', code, path], env=env, capture_output=True)
    assert marker.exists()


def test_malicious_checkpoint_is_refused_under_the_env_override(evil):
    path, marker = evil
    code = ('import sys, mmdeblora; from mmengine.runner.checkpoint import _load_checkpoint\n'
            'mmdeblora.register_all_modules()\n'
            '_load_checkpoint(sys.argv[1])\n')
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')
    proc = subprocess.run([sys.executable, '-c', code, path], env=env, capture_output=True,
                          text=True)
    assert proc.returncode != 0 and not marker.exists()
    assert f"CheckpointFileError: checkpoint '{path}' refers to 'posix.system'" in proc.stderr
    assert not any(advice in proc.stderr for advice in UNSAFE_ADVICE)


@pytest.mark.parametrize('content,message', [
    (b'', 'is empty (0 bytes)'),
    (random.Random(0).randbytes(4096), 'bytes are not a torch.save file'),
    (b'{"state_dict": {}}', 'bytes are not a torch.save file'),
    ('truncated', 'zip archive is damaged or cut short'),
])
def test_broken_files_say_what_is_wrong(tmp_path, content, message):
    if content == 'truncated':
        buf = io.BytesIO()
        torch.save({'state_dict': {'w': torch.zeros(100)}}, buf)
        content = buf.getvalue()[:-300]
    path = tmp_path / 'epoch_1.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointFileError) as err:
        _load_checkpoint(str(path))  # mmengine's path: load_from, --resume, tools/test.py
    assert str(path) in str(err.value) and message in str(err.value)
    assert not any(advice in str(err.value) for advice in UNSAFE_ADVICE)


def test_download_schemes_load_weights_only_too(evil, monkeypatch):
    """Any registered scheme's loader runs with torch's weights-only switch on."""
    path, marker = evil

    def load_from_test(filename, map_location=None):
        return torch.load(filename[len('test://'):], map_location=map_location)

    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    monkeypatch.setattr(CheckpointLoader, '_schemes', dict(CheckpointLoader._schemes))
    CheckpointLoader.register_scheme('test://', load_from_test)
    register_safe_checkpoint_loader()
    with pytest.raises(Exception, match='posix.system'):
        _load_checkpoint('test://' + path)
    assert not marker.exists()
    assert os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] == '1'  # restored
    assert 'TORCH_FORCE_WEIGHTS_ONLY_LOAD' not in os.environ


@pytest.mark.parametrize('content,message', [
    (b'', 'is empty (0 bytes)'),
    (random.Random(0).randbytes(4096), 'bytes are not a torch.save file'),
])
def test_broken_pretrained_file_says_what_is_wrong(tmp_path, content, message):
    """``LoRABackbone(pretrained=...)`` reads files itself (before injection), not through
    mmengine's loader: the same messages there, not torch's bare ``EOFError`` or its advice
    to switch ``weights_only`` off."""
    from mmdeblora.utils.checkpoint import load_weights_file
    path = tmp_path / 'resnet18.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointFileError) as err:
        load_weights_file(str(path))
    assert str(path) in str(err.value) and message in str(err.value)
    assert not any(advice in str(err.value) for advice in UNSAFE_ADVICE)


def test_pretrained_file_never_runs_code_under_the_env_override(evil, monkeypatch):
    from mmdeblora.utils.checkpoint import load_weights_file
    path, marker = evil
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises(CheckpointFileError, match="refers to 'posix.system'"):
        load_weights_file(path)
    assert not marker.exists()


@pytest.mark.parametrize('content,message', [
    (b'', 'is empty (0 bytes)'),
    (random.Random(0).randbytes(4096), 'is not a readable safetensors file'),
])
def test_broken_safetensors_files_name_the_file(tmp_path, content, message):
    """``pretrained=*.safetensors`` and peft adapter folders: safetensors' own error
    ("header too large") names no file."""
    from mmdeblora.models.backbones.adapter_io import read_adapter_folder
    from mmdeblora.utils.checkpoint import load_weights_file
    path = tmp_path / 'unet.safetensors'
    path.write_bytes(content)
    with pytest.raises(CheckpointFileError) as err:
        load_weights_file(str(path))
    assert str(path) in str(err.value) and message in str(err.value)
    folder = tmp_path / 'adapters'
    folder.mkdir()
    (folder / 'adapter_config.json').write_text(
        '{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["conv1"]}')
    (folder / 'adapter_model.safetensors').write_bytes(content)
    with pytest.raises(CheckpointFileError) as err:
        read_adapter_folder(str(folder))
    assert 'adapter_model.safetensors' in str(err.value) and message in str(err.value)


LOADING_STATE = '''
import json, sys, torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader
def state():
    return dict(loader=CheckpointLoader._schemes[''].__module__,
                allow_listed=HistoryBuffer in torch.serialization.get_safe_globals(),
                getstate=HistoryBuffer.__getstate__.__module__)
states = [state()]
import mmdeblora
states.append(state())
from mmengine.config import Config
Config.fromfile(sys.argv[1])  # custom_imports = [..., 'mmdeblora.safe_loading']
states.append(state())
print(json.dumps(states))
'''


def test_importing_mmdeblora_changes_no_loading_and_safe_loading_does(tmp_path):
    """issue 19: ``import mmdeblora`` (e.g. for one loss) leaves mmengine's checkpoint
    loader, torch's allow-list and mmengine's pickling as they are; a config listing
    ``mmdeblora.safe_loading`` in ``custom_imports`` (mmrotate's own tools) installs them."""
    import json
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("custom_imports = dict(imports=['mmdeblora', 'mmdeblora.safe_loading'], "
                   'allow_failed_imports=False)\n')
    proc = subprocess.run([sys.executable, '-c', LOADING_STATE, str(cfg)],
                          capture_output=True, text=True, check=True)
    bare, imported, configured = json.loads(proc.stdout.strip().splitlines()[-1])
    assert bare == dict(loader='mmengine.runner.checkpoint', allow_listed=False,
                        getstate='mmengine.logging.history_buffer')
    assert imported == bare
    assert configured == dict(loader='mmdeblora.utils.checkpoint', allow_listed=True,
                              getstate='mmdeblora.utils.checkpoint')


def test_register_all_modules_installs_the_safe_loader(monkeypatch):
    from mmengine.runner.checkpoint import load_from_local

    from mmdeblora.utils import register_all_modules, safe_checkpoint_loader_installed
    monkeypatch.setattr(CheckpointLoader, '_schemes',
                        dict(CheckpointLoader._schemes, **{'': load_from_local}))
    assert not safe_checkpoint_loader_installed()
    register_all_modules(safe_checkpoints=False)
    assert not safe_checkpoint_loader_installed()
    register_all_modules()
    assert safe_checkpoint_loader_installed()


def test_loading_a_checkpoint_keeps_the_process_allow_list(tmp_path):
    """load_checkpoint_file allows mmengine's contents for its own load without taking them
    off torch's process-wide allow-list (torch's context manager removes on exit what it
    was given): a plain weights-only torch.load afterwards still works."""
    import torch
    from mmengine.logging.history_buffer import HistoryBuffer

    from mmdeblora.utils import register_all_modules
    from mmdeblora.utils.checkpoint import load_checkpoint_file
    register_all_modules()
    path = str(tmp_path / 'c.pth')
    buf = HistoryBuffer()
    buf.update(1.0)
    buf.update(2.0)
    torch.save(dict(meta=dict(buf=buf)), path)
    assert load_checkpoint_file(path)['meta']['buf'].mean() == 1.5
    assert HistoryBuffer in torch.serialization.get_safe_globals()
    assert torch.load(path, weights_only=True)['meta']['buf'].mean() == 1.5
