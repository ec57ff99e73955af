"""mmdeblora.utils.atomic: whole files and folders or none, with the umask's permissions,
a symlink at the final path replaced (its target untouched)."""
import os

import pytest

from mmdeblora.utils.atomic import atomic_path, atomic_write_bytes, current_umask, default_mode


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_current_umask_reads_without_changing_it(umask_027):
    assert current_umask() == 0o027 and current_umask() == 0o027
    assert default_mode() == 0o640 and default_mode(directory=True) == 0o750


def test_files_and_folders_get_the_umask_and_replace_whole(tmp_path, umask_027):
    target = tmp_path / 'theirs.txt'
    target.write_bytes(b'theirs')
    out = tmp_path / 'out.txt'
    out.symlink_to(target)
    atomic_write_bytes(out, b'ours')
    assert not out.is_symlink() and out.read_bytes() == b'ours'
    assert target.read_bytes() == b'theirs'
    assert os.stat(out).st_mode & 0o777 == 0o640
    folder = tmp_path / 'folder'
    for name in ('a', 'b'):                       # the second replaces the first whole
        with atomic_path(folder) as tmp:
            assert tmp.endswith('.tmp') and os.path.dirname(tmp) == str(tmp_path)
            os.mkdir(tmp)
            open(os.path.join(tmp, name), 'w').close()
    assert os.listdir(folder) == ['b'] and os.stat(folder).st_mode & 0o777 == 0o750
    with atomic_path(tmp_path / 'cfg.py') as tmp:
        assert tmp.endswith('.py')                # writers that go by the extension
        open(tmp, 'w').close()


def test_a_failed_write_leaves_the_old_and_no_temporary(tmp_path):
    out = tmp_path / 'out.bin'
    out.write_bytes(b'old')
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(out) as tmp:
            with open(tmp, 'wb') as fh:
                fh.write(b'half')
            raise KeyboardInterrupt
    with pytest.raises(FileNotFoundError, match='nothing was written'):
        with atomic_path(out):
            pass
    assert out.read_bytes() == b'old' and os.listdir(tmp_path) == ['out.bin']
