"""Build the ``fluster-base`` Docker image from this machine's own CPython, with no image registry.

The image holds this interpreter's standard library (no site-packages), the shared libraries it links, the
manylinux baseline libraries wheels expect, static busybox as ``/bin/sh``, host CA certificates, pip, a user
``fluster`` (uid 1000). The worker mounts fluster and its dependencies into each container, so the image never
needs rebuilding for a new fluster version. With a registry, point the worker at any image that has a matching
``python3`` instead (``--image``).

Usage: ``python -m fluster.worker.image [--image TAG] [--force]`` (also ``fluster build-image``).
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

from fluster.errors import ImageBuildError
from fluster.protocol.subjects import LABEL_PYTHON

log = logging.getLogger(__name__)

PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
DEFAULT_IMAGE = f"fluster-base:py{sys.version_info.major}{sys.version_info.minor}"

JOB_UID = 1000
# Wheels built for manylinux expect these from the system; python itself does not link all of them.
_MANYLINUX_LIBS = (
    "libstdc++.so.6",
    "libgcc_s.so.1",
    "libdl.so.2",
    "librt.so.1",
    "libpthread.so.0",
    "libutil.so.1",
    "libresolv.so.2",
    "libm.so.6",
    "libc.so.6",
    "libz.so.1",
)
_BUSYBOX_TOOLS = (
    "sh ash ls cat cp mv rm mkdir rmdir ln chmod touch env id whoami ps kill sleep true false echo printf "
    "grep sed head tail wc tr cut sort uniq find xargs uname which du df tar gzip gunzip less vi date stat "
    "hostname free top"
).split()
# Standard-library parts a job never needs: tests, GUI, and build leftovers.
_STDLIB_SKIP = {"site-packages", "test", "tkinter", "idlelib", "turtledemo", "lib2to3", "__phello__"}
_IMAGE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}


def build_base_image(
    tag: str = DEFAULT_IMAGE, *, force: bool = False, client: docker.DockerClient | None = None
) -> str:
    """Build ``tag`` from the running interpreter unless it already exists (or ``force``); return its id.

    Blocking (about 10 s): call it from a thread in async code.

    Raises:
        ImageBuildError: a needed tool (busybox, ldd) is missing or the import failed.
    """
    client = client or docker.from_env()
    if not force:
        try:
            image = client.images.get(tag)
            log.info("base image exists tag=%s id=%s", tag, image.id)
            return str(image.id)
        except docker.errors.ImageNotFound:
            pass
    with tempfile.TemporaryDirectory(prefix="fluster-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        _assemble_rootfs(root)
        image_id = _import_rootfs(client, root, tag)
    log.info("built base image tag=%s id=%s python=%s", tag, image_id, PYTHON_VERSION)
    return image_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fluster build-image", description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="tag to build (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the tag exists")
    args = parser.parse_args(argv)
    try:
        build_base_image(args.image, force=args.force)
    except (ImageBuildError, docker.errors.DockerException) as exc:
        log.error("cannot build %s: %s", args.image, exc)
        return 1
    return 0


# -- rootfs -------------------------------------------------------------------------------------------


def _assemble_rootfs(root: Path) -> None:
    prefix = Path(sys.base_prefix)
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).exists() or not _is_static(busybox):
        raise ImageBuildError("static busybox is needed: apt-get install busybox-static")
    # a merged-/usr layout, like the host's (Debian bookworm)
    for sub in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/local/bin", "usr/local/lib"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        (root / link).symlink_to(f"usr/{link}")
    for sub in ("etc/ssl/certs", "tmp", "job", "home/fluster", "proc", "sys", "dev", "root", "usr/lib/ssl"):
        (root / sub).mkdir(parents=True, exist_ok=True)

    _copy_python(prefix, root)
    _copy_libraries(prefix, root)
    _install_pip(prefix, root)

    shutil.copy2(busybox, root / "usr/bin/busybox")
    for tool in _BUSYBOX_TOOLS:
        if not (root / "usr/bin" / tool).exists():
            (root / "usr/bin" / tool).symlink_to("busybox")
    shutil.copy2("/sbin/ldconfig", root / "usr/sbin/ldconfig")

    certs = Path("/etc/ssl/certs/ca-certificates.crt")
    if certs.exists():
        shutil.copy2(certs, root / "etc/ssl/certs/ca-certificates.crt")
        (root / "usr/lib/ssl/cert.pem").symlink_to("/etc/ssl/certs/ca-certificates.crt")
        (root / "usr/lib/ssl/certs").symlink_to("/etc/ssl/certs")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        f"fluster:x:{JOB_UID}:{JOB_UID}:fluster:/home/fluster:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (root / "etc/group").write_text(f"root:x:0:\nfluster:x:{JOB_UID}:\nnogroup:x:65534:\n")
    (root / "etc/nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    (root / "etc/ld.so.conf").write_text("/usr/local/lib\n")
    # world-writable with the sticky bit, so any job uid can use them (the import makes every file root's)
    for sub in ("tmp", "job", "home/fluster"):
        (root / sub).chmod(0o1777)
    _run(["/sbin/ldconfig", "-r", str(root)])


def _copy_python(prefix: Path, root: Path) -> None:
    version = PYTHON_VERSION
    stdlib = prefix / "lib" / f"python{version}"
    dest = root / "usr/local/lib" / f"python{version}"

    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = set()
        top = Path(directory) == stdlib
        for name in names:
            if top and name in _STDLIB_SKIP:
                skip.add(name)
            elif re.search(r"\.opt-\d\.pyc$", name) or (name.startswith("libpython") and name.endswith(".a")):
                skip.add(name)
        return skip

    shutil.copytree(stdlib, dest, ignore=ignore, symlinks=True)
    (dest / "site-packages").mkdir()
    binary = root / "usr/local/bin" / f"python{version}"
    shutil.copy2(prefix / "bin" / f"python{version}", binary)
    for alias in ("python3", "python"):
        (root / "usr/local/bin" / alias).symlink_to(f"python{version}")
    libdir = Path(sysconfig.get_config_var("LIBDIR") or prefix / "lib")
    for lib in libdir.glob(f"libpython{version}*.so*"):
        target = root / "usr/local/lib" / lib.name
        shutil.copy2(lib, target, follow_symlinks=True)
    for lib in (root / "usr/local/lib").glob("libpython*.so*"):
        _run(["strip", "--strip-debug", str(lib)], check=False)
    _run(["strip", "--strip-debug", str(binary)], check=False)


def _copy_libraries(prefix: Path, root: Path) -> None:
    """Copy every system library python, its extension modules and manylinux wheels need, with ld-linux."""
    version = PYTHON_VERSION
    objects = [root / "usr/local/bin" / f"python{version}"]
    objects += list((root / "usr/local/lib").glob("libpython*.so*"))
    objects += list((root / "usr/local/lib" / f"python{version}" / "lib-dynload").glob("*.so"))
    needed: set[str] = set()
    for obj in objects:
        needed |= set(_ldd(obj))
    system = _system_libs()
    needed |= {system[name] for name in _MANYLINUX_LIBS if name in system}
    for path in sorted(needed):
        if _in_prefix(path, prefix):
            continue  # libpython, already copied
        dest = root / path.lstrip("/")
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest, follow_symlinks=True)
        real = Path(path).resolve()
        if str(real) != path:  # keep the real file's name too, as ld.so.cache may point at it
            real_dest = root / str(real).lstrip("/")
            if not real_dest.exists():
                real_dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(real, real_dest)


def _install_pip(prefix: Path, root: Path) -> None:
    """Unpack the bundled pip wheel into site-packages and write ``pip``/``pip3`` launchers."""
    bundled = sorted((prefix / "lib" / f"python{PYTHON_VERSION}" / "ensurepip" / "_bundled").glob("pip-*.whl"))
    if not bundled:
        log.warning("no bundled pip wheel found; the image has no pip")
        return
    site = root / "usr/local/lib" / f"python{PYTHON_VERSION}" / "site-packages"
    with zipfile.ZipFile(bundled[-1]) as wheel:
        wheel.extractall(site)
    launcher = "#!/usr/local/bin/python3\nimport sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n"
    for name in ("pip", "pip3", f"pip{PYTHON_VERSION}"):
        path = root / "usr/local/bin" / name
        path.write_text(launcher)
        path.chmod(0o755)


def _import_rootfs(client: docker.DockerClient, root: Path, tag: str) -> str:
    repository, _, label = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, ":", "latest")
    changes = [f"ENV {key}={value}" for key, value in _IMAGE_ENV.items()]
    changes += ["WORKDIR /job", 'CMD ["python3"]', f"LABEL {LABEL_PYTHON}={PYTHON_VERSION}"]
    tar = subprocess.Popen(
        ["tar", "-C", str(root), "--numeric-owner", "--owner=0", "--group=0", "-cf", "-", "."],
        stdout=subprocess.PIPE,
    )
    assert tar.stdout is not None

    def chunks() -> Iterator[bytes]:
        # a generator makes requests send chunked, streaming the tar instead of holding it in memory
        while chunk := tar.stdout.read(1 << 20):  # type: ignore[union-attr]
            yield chunk

    try:
        output = client.api.import_image_from_stream(chunks(), repository=repository, tag=label, changes=changes)
    finally:
        tar.stdout.close()
        if tar.wait() != 0:
            raise ImageBuildError(f"tar of the rootfs failed with exit code {tar.returncode}")
    text = output if isinstance(output, str) else output.decode(errors="replace")
    if '"error"' in text:
        raise ImageBuildError(f"docker import failed: {text.strip()}")
    return str(client.images.get(tag).id)


# -- helpers ------------------------------------------------------------------------------------------


def _ldd(path: Path) -> list[str]:
    result = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
    found = []
    for line in result.stdout.splitlines():
        match = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if match:
            found.append(match.group(1))
    return found


def _system_libs() -> dict[str, str]:
    """64-bit libraries in the host's ld.so cache, by soname."""
    result = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True, check=False)
    libs: dict[str, str] = {}
    for line in result.stdout.splitlines():
        name, sep, path = line.strip().partition(" => ")
        if sep and "64" in name:
            libs.setdefault(name.split()[0], path.strip())
    return libs


def _in_prefix(path: str | Path, prefix: Path) -> bool:
    try:
        Path(path).resolve().relative_to(prefix.resolve())
    except ValueError:
        return False
    return True


def _is_static(path: str) -> bool:
    result = subprocess.run(["ldd", path], capture_output=True, text=True, check=False)
    return result.returncode != 0 or "not a dynamic executable" in (result.stdout + result.stderr)


def _run(cmd: list[str], *, check: bool = True) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ImageBuildError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # run as a program: it talks to a person
    sys.exit(main())
