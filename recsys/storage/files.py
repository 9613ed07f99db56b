"""Atomic files: every file is written to a hidden temp name beside its target, fsynced,
then ``os.replace``d, so a reader sees the old file or the new one, never half of one.
Also checksums, and the resolution of a run's relative paths that refuses any path
leaving the run folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.errors import RunError

FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_path(path: Path, mode: int = FILE_MODE) -> Iterator[Path]:
    """Yield a hidden temp path beside ``path``; on success fsync it, give it ``mode`` and
    replace ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def file_sha256(path: Path, chunk: int = 8 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_text(path: Path, text: str, mode: int = FILE_MODE) -> None:
    with atomic_path(path, mode) as tmp:
        tmp.write_text(text)


def read_text(path: Path) -> str:
    return Path(path).read_text()


def write_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def read_array(path: Path, mmap: bool = False) -> np.ndarray:
    return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)


def write_sparse(path: Path, matrix: sp.csr_matrix) -> None:
    """A CSR matrix as .npz (no pickles), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        sp.save_npz(handle, matrix, compressed=False)


def read_sparse(path: Path) -> sp.csr_matrix:
    """A float32 CSR matrix written by :func:`write_sparse`."""
    return sp.csr_matrix(sp.load_npz(path), dtype=np.float32)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link a published (never rewritten) file into a new run, copying if needed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def is_plain_relative(path: str) -> bool:
    """Whether a path is as a run records it: relative, POSIX, without ``.`` or ``..``."""
    parts = path.split("/")
    return (
        bool(path)
        and not path.startswith("/")
        and "\\" not in path
        and all(p not in ("", ".", "..") for p in parts)
    )


def inside(run_dir: Path, relative: str) -> Path:
    """The file a run records as ``relative``, refusing a path that leaves the run folder:
    absolute, with ``..``, or through a symlink that points outside it."""
    if not is_plain_relative(relative):
        raise RunError(f"{run_dir}: path {relative!r} is not a plain path inside the run folder")
    path = run_dir / relative
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise RunError(f"{path}: file named by the run's manifest is missing") from None
    except (OSError, RuntimeError) as exc:
        raise RunError(f"{path}: cannot resolve ({exc})") from None
    if not resolved.is_relative_to(run_dir.resolve()):
        raise RunError(f"{path}: leads outside the run folder (to {resolved}); refused")
    return path


def verified_path(run_dir: Path, relative: str, size_bytes: int, sha256: str) -> Path:
    """:func:`inside`, then the file's size and sha256 checked against what the run
    recorded: a truncated, replaced or bit-flipped file is refused before any use."""
    path = inside(run_dir, relative)
    if not path.is_file():
        raise RunError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size != size_bytes:
        raise RunError(
            f"{path}: has {size} bytes, the run's manifest says {size_bytes} (truncated or replaced)"
        )
    if file_sha256(path) != sha256:
        raise RunError(f"{path}: checksum does not match the run's manifest (corrupt or replaced)")
    return path


def folder_mode(file_mode: int) -> int:
    """A folder's mode for a file mode: ``x`` wherever there is ``r`` (0644 -> 0755)."""
    return file_mode | ((file_mode & 0o444) >> 2)


def apply_mode(directory: Path, file_mode: int) -> None:
    """Set every file below ``directory`` to ``file_mode`` and every folder (itself
    included) to :func:`folder_mode`: published permissions do not depend on the umask."""
    os.chmod(directory, folder_mode(file_mode))
    for path in directory.rglob("*"):
        if path.is_symlink():
            continue
        os.chmod(path, folder_mode(file_mode) if path.is_dir() else file_mode)


def hash_tree(directory: Path, skip: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every regular file below ``directory`` (relative POSIX paths),
    but hidden files and the names in ``skip``."""
    listed = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if path.is_symlink() or not path.is_file() or relative in skip:
            continue
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        listed[relative] = {"size_bytes": path.stat().st_size, "sha256": file_sha256(path)}
    return listed
