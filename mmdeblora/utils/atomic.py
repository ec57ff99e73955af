"""Write a file or a folder so that readers see either the old one or the whole new one.

Everything is written under a temporary name in the destination's own folder (same file
system, so the final ``os.replace`` is atomic) and renamed into place only once complete;
on an error the temporary is removed and the destination is left as it was.

``tempfile.mkstemp`` / ``mkdtemp`` create their results with mode 0600 / 0700 whatever the
umask is, so a file or folder renamed from them would be private to its writer. The
helpers here give the final file or folder the permissions a plain ``open()`` / ``mkdir``
would give under the current umask (0666 / 0777 minus the umask).

A symlink at the final path is replaced by the new file, not written through: the file the
link pointed to is left untouched.
"""
import contextlib
import os
import os.path as osp
import shutil
import uuid
from typing import IO, Iterator, Union

PathLike = Union[str, 'os.PathLike[str]']

_FILE_MODE = 0o666
_DIR_MODE = 0o777


def current_umask() -> int:
    """The process umask, read without changing it where the system allows.

    ``os.umask`` can only be read by setting it, which would briefly change it for every
    thread of the process; Linux (4.7 or later) reports it in ``/proc/self/status``.
    """
    try:
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode ``open()`` (or ``mkdir`` when ``directory``) would give under the umask."""
    return (_DIR_MODE if directory else _FILE_MODE) & ~current_umask()


def apply_umask(path: PathLike) -> None:
    """Give ``path`` itself (not what a folder holds) the umask's default mode.

    What is written inside a folder with ``open()`` / ``mkdir`` already has it; a symlink
    is left alone (``chmod`` would change its target).
    """
    path = os.fspath(path)
    if not osp.islink(path):
        os.chmod(path, default_mode(osp.isdir(path)))


def _temp_name(path: str) -> str:
    """A hidden name beside ``path`` that keeps its extension (``Config.dump`` and others
    choose the format by it)."""
    folder, base = osp.split(osp.abspath(path))
    stem, ext = osp.splitext(base)
    return osp.join(folder, f'.{stem}.{uuid.uuid4().hex[:12]}.tmp{ext}')


def _remove(path: str) -> None:
    if osp.isdir(path) and not osp.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _move_into_place(tmp: str, path: str) -> None:
    """``os.replace`` that also puts a folder where a folder, file or link was."""
    if not (osp.isdir(tmp) and not osp.islink(tmp)):
        os.replace(tmp, path)  # a file replaces a file or a symlink (not its target)
        return
    if not osp.lexists(path):
        os.replace(tmp, path)
        return
    # rename() puts a folder only over an empty folder: move the old one aside first.
    old = _temp_name(path) + '.old'
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    _remove(old)


@contextlib.contextmanager
def atomic_path(path: PathLike, *, fsync: bool = False) -> Iterator[str]:
    """Yield a temporary name next to ``path``; move what was written there into place.

    The temporary name keeps ``path``'s extension. The caller creates a file *or* a folder
    at the yielded name (nothing exists there yet). When the ``with`` block ends without an
    error, the file or folder is given the umask's default permissions and renamed to
    ``path`` (replacing a file, a symlink or a whole folder there); when it raises, the
    temporary is removed and ``path`` is left as it was. ``fsync`` flushes a written file
    to disk before the rename.
    """
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        if not osp.lexists(tmp):
            raise FileNotFoundError(
                f'nothing was written to the temporary {tmp!r} for {path!r}')
        apply_umask(tmp)
        if fsync and osp.isfile(tmp):
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _move_into_place(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically, with the umask's default permissions."""
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, 'xb') as f:
            f.write(data)


def atomic_write_text(path: PathLike, text: str, *, encoding: str = 'utf-8',
                      fsync: bool = True) -> None:
    """Write ``text`` to ``path`` atomically, with the umask's default permissions."""
    atomic_write_bytes(path, text.encode(encoding), fsync=fsync)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = 'w', *, fsync: bool = True,
                **kwargs) -> Iterator[IO]:
    """``open(path, mode)`` for writing (``'w'``, ``'wb'``), atomically: the file object
    writes a temporary next to ``path``, renamed into place when the block ends without an
    error (for writers that take a file object: ``json.dump``, ``np.save``, ``savefig``)."""
    if mode not in ('w', 'wt', 'wb'):
        raise ValueError(f'atomic_open writes a new file: mode must be w, wt or wb, got '
                         f'{mode!r}')
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, mode.replace('w', 'x'), **kwargs) as f:
            yield f
