"""Every file mode the project writes comes from here.

The share is also mounted on login nodes where untrusted users work, so everything on it is
root-only: directories ``0700``, files ``0600`` (docs/share-protocol.md). Node-local secrets (PKI,
kubeconfigs, rendered configs with peers) follow the same rule.

Writes are atomic in the POSIX/NFS sense: a temporary file in the same directory, ``fsync``,
``rename`` over the target, so a reader that ``open()``s the path sees the old or the new
content, never a half-written file (NFS close-to-open consistency).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644  # certificates only (a CA certificate is public; its key never is)
EXEC_MODE = 0o700


def ensure_dir(path: Path, mode: int = DIR_MODE) -> Path:
    """Create ``path`` (and parents) if missing and force ``mode`` on it. Returns ``path``."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    if (path.stat().st_mode & 0o7777) != mode:
        os.chmod(path, mode)
    return path


def write_atomic(path: Path, data: bytes | str, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, rename), at ``mode``.

    The parent directory must exist. Raises ``OSError`` from the file system; on failure
    the target is unchanged and the temporary file is removed.
    """
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def touch(path: Path, mode: int = FILE_MODE) -> float:
    """Create ``path`` if needed and set its times to *the server's* now; return its mtime.

    ``os.utime(path, None)`` makes the NFS client send SETATTR with "set to server time",
    so the resulting mtime is the share's clock, not this node's.
    """
    try:
        os.utime(path, None)
    except FileNotFoundError:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, mode)
        os.close(fd)
        os.utime(path, None)
    return path.stat().st_mtime


def append_line(path: Path, line: str, mode: int = FILE_MODE) -> int:
    """Append one line (newline added) with ``O_APPEND`` and fsync; return the file's size in
    bytes after it (the write's end offset: no extra ``stat``). Callers serialise appends from
    several nodes with a lock: ``O_APPEND`` is not atomic across NFS clients."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode())
        os.fsync(fd)
        return os.lseek(fd, 0, os.SEEK_CUR)
    finally:
        os.close(fd)
