"""What a training run and the de-biasing report write goes to a temporary name and is
renamed into place (mmdeblora.utils.atomic): a symlink at an output path (to a user's file)
is replaced, not written through; a write that fails part-way (a full disk) leaves the
previous file whole and no temporary behind; the files get the umask's permissions."""
import contextlib
import errno
import os
import resource
import signal
import stat

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import CheckpointHook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

from mmdeblora.deblora.state import fit_debias
from mmdeblora.engine import AtomicCheckpointHook, CheckedRunner, DebLoRAHook
from mmdeblora.engine.debias import DebiasResult
from mmdeblora.engine.debias_report import save_result
from mmdeblora.utils.atomic import atomic_open

UMASK = 0o027
LIMIT = 256 * 1024  # bytes a file may grow to while the disk is "full"; checkpoints: ~1 MB


@pytest.fixture
def file_mode():
    """The test runs under umask 0o027 (files 0o640, not mmengine's usual 0o644)."""
    old = os.umask(UMASK)
    yield 0o666 & ~UMASK
    os.umask(old)


@contextlib.contextmanager
def full_disk(limit: int = LIMIT):
    """A write past ``limit`` bytes of a file fails part-way with a real ``OSError``
    (EFBIG), as on a full disk: the kernel's file size limit (RLIMIT_FSIZE) of this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the signal kills us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def leftovers(folder) -> list:
    return sorted(n for n in os.listdir(folder) if '.tmp' in n)


def user_files(tmp_path, work, names) -> dict:
    """A symlink ``work/<name>`` to a user's file for each name; returns link -> content."""
    work.mkdir(exist_ok=True)
    (tmp_path / 'user').mkdir(exist_ok=True)
    out = {}
    for name in names:
        target = tmp_path / 'user' / ('mine_' + name)
        target.write_text(f"the user's {name}, not to be overwritten")
        os.symlink(target, work / name)
        out[name] = target
    return out


def assert_replaced(work, links: dict, mode: int) -> None:
    for name, target in links.items():
        assert target.read_text() == f"the user's {name}, not to be overwritten", name
        path = work / name
        assert path.is_file() and not path.is_symlink(), name
        assert stat.S_IMODE(path.stat().st_mode) == mode, (name, oct(path.stat().st_mode))
    assert leftovers(work) == []


# ---------------------------------------------------------------------- a tiny runner
class TinyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(512, 512), nn.Linear(512, 1)  # a ~1 MB checkpoint

    def forward(self, inputs, targets=None, mode='tensor'):
        y = self.out(self.fc(inputs)).squeeze(1)
        return dict(loss=((y - targets) ** 2).mean()) if mode == 'loss' else y


class Data(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return dict(inputs=torch.full((512, ), i / 4), targets=torch.tensor(float(i % 2)))


def trained(tmp_path, work, runner_cls=CheckedRunner, epochs=1, **checkpoint):
    """Epochs of two iterations; the config file ``tiny.py`` is dumped to the work dir."""
    cfg = tmp_path / 'tiny.py'
    cfg.write_text('divergence_guard = None\n')
    torch.manual_seed(0)
    runner = runner_cls(
        model=TinyModel(), work_dir=str(work),
        train_dataloader=dict(dataset=Data(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=True, max_epochs=epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=100),
                           checkpoint=dict(type='CheckpointHook', interval=1, **checkpoint)),
        cfg=Config.fromfile(str(cfg)),
        experiment_name=f'atomic_{tmp_path.name}_{work.name}_{runner_cls.__name__}')
    runner.train()
    return runner


def test_training_replaces_symlinked_outputs_with_files_of_the_umask(tmp_path, file_mode):
    work = tmp_path / 'work'
    links = user_files(tmp_path, work, ['epoch_1.pth', 'tiny.py', 'last_checkpoint'])
    trained(tmp_path, work)
    assert_replaced(work, links, file_mode)
    ckpt = torch.load(work / 'epoch_1.pth', map_location='cpu', weights_only=True)
    assert ckpt['meta']['epoch'] == 1 and 'fc.weight' in ckpt['state_dict']
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_1.pth')
    assert (work / 'tiny.py').read_text() == Config.fromfile(str(work / 'tiny.py')).pretty_text


def test_the_checkpoint_hook_keeps_its_options(tmp_path):
    """CheckedRunner's AtomicCheckpointHook is upstream's but for last_checkpoint."""
    work = tmp_path / 'work'
    runner = trained(tmp_path, work, epochs=3, max_keep_ckpts=2)
    (hook, ) = [h for h in runner.hooks if isinstance(h, CheckpointHook)]
    assert type(hook) is AtomicCheckpointHook and hook.max_keep_ckpts == 2
    assert sorted(n for n in os.listdir(work) if n.endswith('.pth')) == [
        'epoch_2.pth', 'epoch_3.pth']
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_3.pth')


def test_a_checkpoint_write_failing_part_way_keeps_the_previous_file(tmp_path):
    work = tmp_path / 'work'
    runner = trained(tmp_path, work)
    path = work / 'epoch_1.pth'
    before = path.read_bytes()
    assert len(before) > 2 * LIMIT
    with full_disk(), pytest.raises(OSError) as err:
        runner.save_checkpoint(str(work), 'epoch_1.pth')
    assert err.value.errno == errno.EFBIG
    assert path.read_bytes() == before  # upstream: cut at LIMIT bytes under this name
    assert leftovers(work) == []
    runner.save_checkpoint(str(work), 'epoch_1.pth')  # the disk has room again
    assert 'fc.weight' in torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def test_stage1_checkpoint_is_renamed_into_place_whatever_the_runner(tmp_path, file_mode):
    work = tmp_path / 'work'
    runner = trained(tmp_path, work, Runner)  # mmengine's: its own writes are not atomic
    os.remove(work / 'last_checkpoint')  # written by mmengine's CheckpointHook
    links = user_files(tmp_path, work, ['stage1_final.pth', 'last_checkpoint'])
    hook = DebLoRAHook(switch_epoch=1)
    hook._save_stage1(runner)
    assert_replaced(work, links, file_mode)
    path = work / 'stage1_final.pth'
    assert (work / 'last_checkpoint').read_text() == str(path)
    before = path.read_bytes()
    with full_disk(), pytest.raises(OSError):
        hook._save_stage1(runner)
    assert path.read_bytes() == before and leftovers(work) == []


def test_debias_report_replaces_symlinked_outputs(tmp_path, file_mode):
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(30, 4), dim=1)
    y = torch.tensor([0] * 20 + [1] * 7 + [2] * 3)
    state = fit_debias(z, y, ['a', 'b', 'c'], [False, True, True], num_clusters=4)
    result = DebiasResult(state=state, z=z, z_hat=z.clone(), labels=y,
                          groups=dict(head=['a'], tail=['b', 'c']))
    names = [os.path.basename(p) for p in save_result(result, str(tmp_path / 'first'))]
    assert 'embedding.png' in names and 'deblora_state.npz' in names
    work = tmp_path / 'deblora'
    links = user_files(tmp_path, work, names)
    save_result(result, str(work))
    assert_replaced(work, links, file_mode)
    for name in names:
        assert (work / name).read_bytes() == (tmp_path / 'first' / name).read_bytes(), name


def test_atomic_open_writes_whole_files_or_none(tmp_path, file_mode):
    path = tmp_path / 'report.json'
    path.write_text('old')
    with pytest.raises(RuntimeError, match='stopped'):
        with atomic_open(path) as fh:
            fh.write('half')
            raise RuntimeError('stopped')
    assert path.read_text() == 'old' and leftovers(tmp_path) == []
    with atomic_open(path, 'wb') as fh:
        fh.write(b'new')
    assert path.read_bytes() == b'new'
    assert stat.S_IMODE(path.stat().st_mode) == file_mode
    with pytest.raises(ValueError, match='mode must be'):
        with atomic_open(path, 'a'):
            pass
