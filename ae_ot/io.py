"""Files: atomic writes, the cache folder, a digest of image data, and reading a Lightning checkpoint.

An interrupted job (Ctrl-C, ``kill -9``, a full disk) must never leave half a file where a later
run, or a reader, expects a whole one. Every file the package writes for later reading goes
through :func:`atomic_write`: write a temporary file beside the target, then :func:`os.replace`
it onto the target (atomic on POSIX and Windows within one file system).

Standard library and torch only: every layer, ``ae_ot.ot`` included, can import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from ae_ot.checks import UserInputError

__all__ = ["atomic_write", "atomic_torch_save", "write_json_atomic", "cache_dir", "check_cache_dir",
           "check_writable_path", "data_digest", "read_checkpoint"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it onto ``path``.

    A reader, or a run resumed after a kill, sees the old file or the whole new one, never half of
    it. The temporary name keeps ``path``'s suffix (matplotlib reads the format from it). Returns
    ``path``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = tempfile.mkdtemp()
    >>> path = atomic_write(Path(folder) / "note.txt", lambda tmp: tmp.write_text("done"))
    >>> path.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes the file private (0600); the result gets the mode open() would give it.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _umask() -> int:
    """The process's umask (os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through :func:`atomic_write`.

    Examples
    --------
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> path = atomic_torch_save({"step": 3}, Path(tempfile.mkdtemp()) / "state.pt")
    >>> torch.load(path)
    {'step': 3}
    """
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_json_atomic(data, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON to ``path`` through :func:`atomic_write` (fsynced).

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> path = write_json_atomic({"fid": 9.0}, Path(tempfile.mkdtemp()) / "metrics.json")
    >>> json.loads(path.read_text())
    {'fid': 9.0}
    """
    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def cache_dir() -> Path:
    """Where the package caches what it computes once per machine (the MNIST classifier, decoded
    MNIST): ``$AE_OT_CACHE`` if set, else ``~/.cache/ae-ot``.

    Examples
    --------
    >>> cache_dir().name != ""
    True
    """
    env = os.environ.get("AE_OT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ae-ot"


def check_cache_dir() -> Path:
    """The cache folder (:func:`cache_dir`), created if needed, or :class:`UserInputError` naming
    ``AE_OT_CACHE`` and the fix when it cannot hold files: it is a file, or a folder that cannot be
    created or written. Call it before work whose result is to be cached (training the classifier),
    so that the work is not lost. It writes (and removes) a probe file: permissions alone do not
    tell, e.g. for root or on a read-only mount."""
    path = cache_dir()
    env = os.environ.get("AE_OT_CACHE")
    source = f"AE_OT_CACHE={env!r}" if env else "the default, as AE_OT_CACHE is not set"
    fix = "point AE_OT_CACHE at a writable folder (export AE_OT_CACHE=/path/to/cache)"
    if path.exists() and not path.is_dir():
        raise UserInputError(f"the cache folder {path} ({source}) is a file, not a folder; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UserInputError(f"the cache folder {path} ({source}) cannot hold files ({type(err).__name__}: "
                             f"{err.strerror or err}); {fix}") from err
    return path


def check_writable_path(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a :class:`Path`, or :class:`UserInputError` (naming ``what``, e.g. ``"--output"``)
    when a file cannot be written there: it is a folder, or its nearest existing folder is a file
    or not writable. Missing folders are fine (the writers create them); nothing is created here,
    so a check that passes leaves no trace.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> check_writable_path(Path(tempfile.mkdtemp()) / "grid.png", "--output").name
    'grid.png'
    """
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{what} {path} is a folder; give a file path inside it (e.g. {path / 'out'}{path.suffix})")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserInputError(f"cannot write {what} {path}: {ancestor} is a file, not a folder; give a path in a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserInputError(f"cannot write {what} {path}: the folder {ancestor} is not writable; give a path in a "
                             f"writable folder")
    return path


def data_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    """A 32-hex-digit digest of images [N, C, H, W] in [0, 1] (at 8-bit precision) and labels [N]:
    it keys the caches that depend on the training data, whatever source it was read from.

    Examples
    --------
    >>> import torch
    >>> images, labels = torch.zeros(2, 1, 28, 28), torch.tensor([3, 7])
    >>> digest = data_digest(images, labels)
    >>> len(digest), digest == data_digest(images, labels)
    (32, True)
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(str(tuple(images.shape)).encode())
    h.update((images * 255).round().to(torch.uint8).contiguous().numpy().tobytes())
    h.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def read_torch_file(path: str | os.PathLike, required: tuple[str, ...], kind: str, hint: str) -> dict:
    """The dict saved in a ``torch.save`` file, on the CPU, holding every key of ``required``.

    Raises ``FileNotFoundError`` for a missing file and :class:`UserInputError` (naming the path,
    the ``kind`` of file expected and the ``hint``) for a folder, a corrupt or truncated file, or
    a file that is not such a dict.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{kind} {path} does not exist")
    if path.is_dir():
        raise UserInputError(f"{kind} {path} is a directory; {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise UserInputError(f"cannot read {kind} {path}: it is corrupt, truncated or not a PyTorch file "
                             f"({type(err).__name__}: {str(err)[:200]}); {hint}") from err
    missing = [key for key in required if not isinstance(state, dict) or key not in state]
    if missing:
        raise UserInputError(f"{path} is not a {kind} (no {', '.join(repr(k) for k in missing)} entry); {hint}")
    return state


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The dict of a Lightning checkpoint file, on the CPU (see :func:`read_torch_file`).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = atomic_torch_save({"state_dict": {}, "epoch": 2}, Path(tempfile.mkdtemp()) / "last.ckpt")
    >>> read_checkpoint(path)["epoch"]
    2
    """
    return read_torch_file(path, ("state_dict",), "Lightning checkpoint",
                           "pass a .ckpt file (e.g. lightning_logs/version_0/checkpoints/*.ckpt)")
