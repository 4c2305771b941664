"""File helpers shared by every layer: the one inter-process file lock (report folders, study folders, the
capture cache)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional


@contextlib.contextmanager
def file_lock(path, *, wait: bool = True, busy: Optional[str] = None, optional: bool = False) -> Iterator[None]:
    """Hold an exclusive lock (fcntl) on the file ``path`` for the block; the file and its folder are created.

    ``wait=True`` waits for another process holding it; ``wait=False`` raises ValueError(``busy``) instead.
    ``optional=True``: where the lock file cannot be made (an unusable folder), the block runs without a lock.
    The lock goes with the process: a process that dies releases it.
    """
    import fcntl

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
    except OSError:
        if not optional:
            raise
        yield
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise ValueError(busy or f"{path} is locked by another process") from None
        yield
    finally:
        handle.close()  # releases the lock
