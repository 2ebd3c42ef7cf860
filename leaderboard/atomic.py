"""The leaderboard's own atomic file write: a reader, or a crash at any moment, sees the old file or the new one.

:func:`atomic_write_text` writes to a temporary file in the target's directory, flushes
and fsyncs it, renames it over the target (``os.replace``, atomic on POSIX within one
file system) and fsyncs the directory so the rename itself survives a power loss. A
process killed before the rename leaves the old file untouched (and at most a stray
``.<name>-*.tmp`` file beside it); after the rename the new file is complete.

This is the leaderboard's local helper; the project's shared atomic-write helper is to
replace it (one way to do each thing).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    # The rename is recorded in the directory; without this a power loss could undo it.
    # Some platforms (Windows) cannot open a directory; the rename is still atomic there.
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically and durably; return the path.

    Args:
        path: The file to write; its directory is created if missing.
        text: The complete new content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: The directory is not writable, the disk is full, ... (the old file is then untouched).

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.json"
    >>> atomic_write_text(target, "{}").read_text()
    '{}'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); keep the target's mode, or the umask's default for a new file.
        os.chmod(temporary, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)
    return path
