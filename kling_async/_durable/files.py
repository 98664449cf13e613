"""Durable file steps shared by the batch anchor and the downloads (blocking: run in a thread).

A file is written whole to a temporary name, fsynced, then renamed over its final name;
the folder is fsynced after the rename, so the rename itself survives a power loss.
"""

import os
import pathlib

__all__ = ["replace_durably", "write_all"]


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write only part)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def replace_durably(source: pathlib.Path, target: pathlib.Path) -> None:
    """Rename ``source`` over ``target``, then fsync the folder so the rename is durable."""
    os.replace(source, target)
    try:
        fd = os.open(target.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover -- platforms without directory fds (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
