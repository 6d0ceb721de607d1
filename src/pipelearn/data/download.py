"""Downloads checked against an md5 sum and moved into place only when complete."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path, PurePosixPath

from pipelearn.data.errors import DatasetError

_CHUNK = 1 << 20


def md5sum(path: str | Path) -> str:
    """The hex md5 digest of a file."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, dest: Path, md5: str, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out, _CHUNK)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"could not download {url}: {exc}") from exc
    actual = md5sum(dest)
    if actual != md5:
        raise DatasetError(f"download of {url} is corrupt: md5 {actual}, expected {md5}")


def download_file(url: str, dest: str | Path, md5: str, *, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` and verify its md5; `dest` appears only once complete and valid."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _fetch(url, tmp, md5, timeout)
        tmp.chmod(0o644)  # mkstemp makes the file private to its owner
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _safe_member_path(member: tarfile.TarInfo, archive: str) -> PurePosixPath:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise DatasetError(f"refusing to extract {member.name!r} from {archive}: path leaves the target directory")
    if not (member.isfile() or member.isdir()):
        raise DatasetError(f"refusing to extract {member.name!r} from {archive}: not a regular file or directory")
    return path


def _extract_tar(archive: Path, target: Path) -> None:
    """Extract regular files and directories only, rejecting any member that would land outside `target`."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                path = _safe_member_path(member, archive.name)
                out = target.joinpath(*path.parts)
                if member.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    raise DatasetError(f"cannot read {member.name!r} from {archive.name}")
                with source, open(out, "wb") as sink:
                    shutil.copyfileobj(source, sink, _CHUNK)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"cannot extract {archive.name}: {exc}") from exc


def download_and_extract(url: str, md5: str, root: str | Path, subdir: str, *, timeout: float = 60.0) -> Path:
    """Download a tarball, verify it, extract it and move its `subdir` to `root/subdir` in one rename."""
    root = Path(root)
    final = root / subdir
    if final.exists():
        raise DatasetError(f"{final} already exists; remove it to download again")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{subdir}.", suffix=".part", dir=root))
    try:
        archive = staging / "archive"
        _fetch(url, archive, md5, timeout)
        extracted = staging / "extracted"
        _extract_tar(archive, extracted)
        if not (extracted / subdir).is_dir():
            raise DatasetError(f"archive from {url} holds no directory {subdir!r}")
        os.replace(extracted / subdir, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
