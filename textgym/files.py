"""Crash-safe file writing: a file is either its old or its new version, never a torn mix.

Three patterns, one helper each:

* **Whole files** (``config.json``, ``summary.json``, ``entries.json``, ...):
  :func:`atomic_write` writes a temporary file in the same directory, flushes and fsyncs it,
  renames it over the target (``os.replace``, atomic on POSIX) and fsyncs the directory, so
  that after a crash or power loss the name holds the complete old or the complete new
  content.
* **Directories of several files** (checkpoints): :func:`replace_directory` builds the new
  version as a hidden sibling directory and then switches ``target``, a relative symbolic
  link, to it with one ``os.replace``; readers that open ``target/<file>`` see one complete
  version. The previous version is removed after the switch.
* **Append-only JSON Lines** (recorded generations): :class:`AppendOnlyFile` writes each
  record as one ``write`` of the whole line (newline included) on an ``O_APPEND``
  descriptor, followed by an fsync. A crash can leave at most the last line torn (no
  newline); :func:`repair_jsonl_tail` cuts such a line when the file is reopened for
  appending, so earlier records are never lost and a torn one is never glued to the next.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

#: The process's umask, read once: temporary files get the mode a plain ``open`` would give.
_UMASK = os.umask(0)
os.umask(_UMASK)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush a directory's entries (a rename or a new file in it) to the disk, where the OS allows it."""
    if os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write(path: str | os.PathLike, data: str | bytes, encoding: str = "utf-8") -> Path:
    """Replace the file ``path`` by ``data`` atomically (temporary file, fsync, rename, fsync of the directory).

    A crash at any moment leaves ``path`` with its complete old content (or absent, if it
    was) or its complete new content; at worst a hidden ``.<name>-*.tmp`` file is left
    beside it. Parent directories are created. An existing file keeps its permissions.

    Args:
        path: The file to write.
        data: Its new content; text is encoded with ``encoding``.
        encoding: Encoding of text ``data``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_UMASK
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            if hasattr(os, "fchmod"):  # mkstemp makes the file private; give it the usual mode
                os.fchmod(handle.fileno(), mode)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


# -- directories ------------------------------------------------------------------------


def build_directory(target: str | os.PathLike, build: Callable[[Path], None]) -> Path:
    """Create the directory ``target`` complete or not at all.

    ``build(staging)`` fills a new hidden sibling, which is then renamed to ``target``.
    ``target`` must not exist (the rename fails on a non-empty directory); if ``build`` or
    the rename fails, the sibling is removed and the error raised.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def new_version_directory(target: str | os.PathLike) -> Path:
    """A new, empty hidden sibling of ``target`` to build its next version in (see :func:`replace_directory`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.v{time.time_ns()}-", dir=target.parent))


def replace_directory(version: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Make ``target`` name the complete directory ``version`` in one atomic step; remove older versions.

    ``version`` must come from :func:`new_version_directory` and hold its complete content.
    Its files are fsynced, then ``target`` becomes (or is switched, with ``os.replace``) a
    relative symbolic link to it. Readers that open ``target/<file>`` see either the whole
    previous version or the whole new one. Older versions and the leftovers of interrupted
    writes (hidden ``.<target>.v*`` siblings) are removed afterwards.

    A ``target`` that is a real directory (written before versions existed) is renamed
    aside first: only during that one-time migration can a crash leave ``target`` missing,
    its content then kept, complete, in a hidden ``.<target>.v*`` sibling.

    Returns:
        ``target`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``version`` is not a sibling of ``target`` made for it.
    """
    version, target = Path(version), Path(target)
    # From Python 3.12 mkdtemp returns an absolute path even for a relative ``dir``, so the
    # parents are compared as absolute paths (not resolved: a linked parent is still the same).
    same_parent = os.path.abspath(version.parent) == os.path.abspath(target.parent)
    if not same_parent or not version.name.startswith(f".{target.name}.v"):
        raise ValueError(f"{version} is not a version directory of {target} (use new_version_directory)")
    for file in version.rglob("*"):
        if file.is_file():
            fsync_file(file)
    fsync_directory(version)
    link = target.parent / f".{target.name}.link-{version.name}"
    link.unlink(missing_ok=True)
    os.symlink(version.name, link)
    if target.is_dir() and not target.is_symlink():
        os.rename(target, new_version_directory(target))
    os.replace(link, target)
    fsync_directory(target.parent)
    for sibling in target.parent.glob(f".{target.name}.*"):
        if sibling.name != version.name:
            if sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)
    return target


# -- append-only JSON Lines -------------------------------------------------------------


def repair_jsonl_tail(path: str | os.PathLike) -> int:
    """Make a JSON Lines file end with a newline, as every complete record does; return the bytes cut.

    A final line without its newline is the end of a write that a crash cut short. If it
    parses as JSON it is a whole record that lost only its newline, which is added; otherwise
    it is cut (with a warning naming the file and the byte count). A missing or empty file is
    left alone.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        start, chunk = size, 1 << 16
        while start > 0:  # find the last newline, reading backwards
            begin = max(0, start - chunk)
            handle.seek(begin)
            block = handle.read(start - begin)
            newline = block.rfind(b"\n")
            if newline >= 0:
                start = begin + newline + 1
                break
            start = begin
        handle.seek(start)
        tail = handle.read()
        try:
            json.loads(tail)
        except (json.JSONDecodeError, UnicodeDecodeError):
            handle.truncate(start)
            cut = len(tail)
            warnings.warn(
                f"{path}: cut a torn last line of {cut} bytes (a write interrupted by a crash)",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            handle.seek(0, os.SEEK_END)
            handle.write(b"\n")
            cut = 0
        handle.flush()
        os.fsync(handle.fileno())
    return cut


class AppendOnlyFile:
    """A file that lines are only ever appended to, each durably and in one piece.

    Opening repairs a torn last line (:func:`repair_jsonl_tail`) and creates parent
    directories. :meth:`write` appends its text with one ``write`` on an ``O_APPEND``
    descriptor (several writers of one file never interleave within a line) and fsyncs it
    before returning.

    Args:
        path: The file; created if missing.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_jsonl_tail(self.path)
        self._file = open(self.path, "ab", buffering=0)  # unbuffered: each write is one system call

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._file.closed

    def write(self, text: str) -> None:
        """Append ``text`` (whole lines, each ending with a newline) and fsync it.

        Raises:
            ValueError: The file is closed, or ``text`` does not end with a newline.
        """
        if self._file.closed:
            raise ValueError(f"{self.path} is closed")
        if not text.endswith("\n"):
            raise ValueError("append whole lines: the text must end with a newline")
        data = memoryview(text.encode("utf-8"))
        while data:  # a regular file takes the whole write unless the disk is full
            data = data[self._file.write(data) :]
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._file.close()

    def __enter__(self) -> AppendOnlyFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def append_lines(path: str | os.PathLike, text: str) -> None:
    """Append whole lines to ``path`` durably, as one write (see :class:`AppendOnlyFile`)."""
    if not text:
        return
    with AppendOnlyFile(path) as handle:
        handle.write(text)


def truncate_file(path: str | os.PathLike, size: int) -> None:
    """Cut ``path`` back to ``size`` bytes and fsync it (appended data after a checkpoint, on resume).

    Raises:
        ValueError: The file is shorter than ``size``: data it held was lost or replaced.
    """
    path = Path(path)
    current = path.stat().st_size if path.exists() else 0
    if current < size:
        raise ValueError(f"{path} holds {current} bytes, fewer than the {size} it held when last checkpointed")
    if current == size:
        return
    with open(path, "rb+") as handle:
        handle.truncate(size)
        handle.flush()
        os.fsync(handle.fileno())
