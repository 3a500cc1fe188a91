"""Entries of the worker's build caches on disk: built in a temporary directory beside their final name,
renamed into place atomically (so an entry that exists is complete), made readable by a container's user,
and half-built leftovers of crashed builds removed.

What goes into an entry is its builder's (``worker/environments.py``, ``worker/fluster_site.py``).
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

_ABANDONED_AFTER_S = 24 * 3600


def open_for_all(root: Path) -> None:
    """Make a tree readable (and dirs enterable) by any user: containers run as uid 1000."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                mode = stat.S_IMODE(os.stat(path).st_mode)
                os.chmod(path, mode | 0o444 | (0o111 if mode & 0o100 else 0))


def remove_abandoned(directory: Path) -> None:
    """Remove half-built entries a crashed build left (old enough that no live build owns them)."""
    cutoff = time.time() - _ABANDONED_AFTER_S
    for tmp in directory.glob(".tmp-*"):
        try:
            if tmp.stat().st_mtime < cutoff:
                shutil.rmtree(tmp, ignore_errors=True)
        except FileNotFoundError:  # another worker sharing the cache removed it first
            pass


def publish(tmp: Path, final: Path) -> None:
    """Rename a finished build into place; a concurrent builder that got there first wins."""
    tmp.chmod(0o755)
    try:
        tmp.rename(final)
    except OSError:
        if not final.exists():
            raise
