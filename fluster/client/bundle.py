"""Workspace bundles: a directory zipped deterministically and stored once per content in the object store.

The zip holds the files git would (``git ls-files --cached --others --exclude-standard``) or, outside a git
repository, everything but a default exclude list and the patterns of ``.gitignore`` files. Entries are sorted
and carry fixed timestamps, so the same content always gives the same bytes and the same sha256 digest.
Workers fetch and extract bundles (``fluster.worker.environments``); this module only builds and uploads them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import logging
import os
import subprocess
import zipfile
from pathlib import Path, PurePosixPath

import anyio
from nats.js.errors import NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from fluster.bus.blobs import put_blob
from fluster.protocol.subjects import bundle_object

log = logging.getLogger(__name__)

MAX_BUNDLE_BYTES = 64 << 20
# Outside git, these never go into a bundle (names matched at any depth).
DEFAULT_EXCLUDES = (
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    "*.pyc",
    "*.pyo",
    ".venv",
    "venv",
    ".env",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".ipynb_checkpoints",
    "node_modules",
    "*.egg-info",
    ".eggs",
    "build",
    "dist",
    ".DS_Store",
)
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp; fixed so the bytes depend on content only


async def upload_workspace(objects: ObjectStore, workspace: Path, max_bytes: int = MAX_BUNDLE_BYTES) -> tuple[str, int]:
    """Zip ``workspace`` and store it as ``bundle_object(digest)`` unless that object exists; return
    ``(digest, size)`` where digest is the zip's sha256 (hex).

    Raises:
        ValueError: ``workspace`` is not a directory, or the zip is larger than ``max_bytes``.
    """
    data = await anyio.to_thread.run_sync(build_bundle, workspace, max_bytes)
    digest = hashlib.sha256(data).hexdigest()
    name = bundle_object(digest)
    try:
        await objects.get_info(name)
        log.debug("workspace bundle already stored digest=%s size=%d", digest, len(data))
    except (ObjectNotFoundError, NotFoundError):
        await put_blob(objects, name, data)
        log.info("workspace bundle uploaded digest=%s size=%d path=%s", digest, len(data), workspace)
    return digest, len(data)


def build_bundle(workspace: Path, max_bytes: int = MAX_BUNDLE_BYTES) -> bytes:
    """The deterministic zip of ``workspace`` (blocking).

    Raises:
        ValueError: ``workspace`` is not a directory, or the zip is larger than ``max_bytes``.
    """
    root = workspace.resolve()
    if not root.is_dir():
        raise ValueError(f"workspace {str(workspace)!r} is not a directory")
    files = workspace_files(root)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for relative in files:
            path = root / relative
            info = zipfile.ZipInfo(relative, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so the mode bits below are read back
            executable = os.stat(path).st_mode & 0o111
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            archive.writestr(info, path.read_bytes())
            if buffer.tell() > max_bytes:
                _too_big(workspace, f"more than {max_bytes}", max_bytes)
    data = buffer.getvalue()
    if len(data) > max_bytes:
        _too_big(workspace, str(len(data)), max_bytes)
    return data


def workspace_files(root: Path) -> list[str]:
    """Sorted POSIX paths (relative to ``root``) of the regular files that belong in the bundle."""
    listed = _git_files(root)
    if listed is None:
        listed = _walk_files(root)
    files = []
    for relative in listed:
        path = root / relative
        if path.is_symlink():
            if _inside(path, root):  # a link to a file of the workspace is stored as that file
                files.append(relative)
        elif path.is_file():
            files.append(relative)
    return sorted(set(files))


# -- helpers --------------------------------------------------------------------------------------------


def _too_big(workspace: Path, size: str, max_bytes: int) -> None:
    raise ValueError(
        f"workspace {str(workspace)!r} zips to {size} bytes, over the limit of {max_bytes} bytes: "
        f"leave data, build outputs and virtualenvs out of it (.gitignore), or raise the limit"
    )


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root) and path.resolve().is_file()


def _git_files(root: Path) -> list[str] | None:
    """Files git would track under ``root`` (tracked plus untracked-not-ignored), or None outside git."""
    try:
        result = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=False,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return [name for name in result.stdout.decode(errors="surrogateescape").split("\0") if name]


def _walk_files(root: Path) -> list[str]:
    """Files under ``root`` minus DEFAULT_EXCLUDES and the patterns of every ``.gitignore`` on the way."""
    files: list[str] = []
    rules: list[tuple[PurePosixPath, str, bool, bool]] = []  # (base dir, pattern, negated, dir only)
    for dirpath, dirnames, filenames in os.walk(root):
        base = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        ignore_file = Path(dirpath) / ".gitignore"
        if ignore_file.is_file():
            rules += _parse_gitignore(base, ignore_file.read_text(errors="replace"))
        dirnames[:] = sorted(d for d in dirnames if not _ignored(base / d, True, rules))
        for name in filenames:
            if not _ignored(base / name, False, rules):
                files.append((base / name).as_posix())
    return files


def _parse_gitignore(base: PurePosixPath, text: str) -> list[tuple[PurePosixPath, str, bool, bool]]:
    rules = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.strip("/") if dir_only else line
        rules.append((base, line, negated, dir_only))
    return rules


def _ignored(path: PurePosixPath, is_dir: bool, rules: list[tuple[PurePosixPath, str, bool, bool]]) -> bool:
    if any(fnmatch.fnmatchcase(path.name, pattern) for pattern in DEFAULT_EXCLUDES):
        return True
    ignored = False
    for base, pattern, negated, dir_only in rules:  # the last matching rule wins, as in git
        if dir_only and not is_dir:
            continue
        try:
            relative = path.relative_to(base) if str(base) != "." else path
        except ValueError:
            continue
        anchored = "/" in pattern.lstrip("/") or pattern.startswith("/")
        pattern = pattern.lstrip("/")
        if anchored:
            matched = fnmatch.fnmatchcase(relative.as_posix(), pattern) or fnmatch.fnmatchcase(
                relative.as_posix(), pattern.replace("**/", "")
            )
        else:
            matched = fnmatch.fnmatchcase(relative.name, pattern)
        if matched:
            ignored = not negated
    return ignored
