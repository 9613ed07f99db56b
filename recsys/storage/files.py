"""Atomic files: every file is written to a hidden temp name beside its target, fsynced,
then ``os.replace``d, so a reader sees the old file or the new one, never half of one.
Also checksums, and the resolution of a run's relative paths that refuses any path
leaving the run folder."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.errors import ConfigError, RunError

FILE_MODE = 0o644


# ---------------------------------------------------------------- reading only regular files

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
    stat.S_IFLNK: "a symlink",
}


class NotRegularFile(OSError):
    """A path the product reads (a published or control file) is not a regular file: a
    FIFO, a device, a socket or a folder. An ``OSError``, so that every caller that turns
    an unreadable file into one line does so for this too."""

    def __init__(self, path: str | Path, mode: int):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        message = f"not a regular file ({kind}): damaged or not made by recsys"
        super().__init__(errno.EINVAL, message, str(path))


def kind_of(path: str | Path) -> str | None:
    """None where ``path`` is a regular file (symlinks followed) or does not exist; else
    what it is (``a FIFO``, ``a folder``, ...). Never opens it, so never blocks."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return None if stat.S_ISREG(mode) else _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def is_regular(path: str | Path) -> bool:
    """Whether ``path`` is a regular file (symlinks followed), without opening it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def open_regular(path: str | Path, flags: int = os.O_RDONLY) -> int:
    """A file descriptor of ``path`` if it is a regular file, else :class:`NotRegularFile`.
    Opened with ``O_NONBLOCK`` (opening a FIFO for reading would wait for a writer for
    ever), checked with ``fstat`` on what was opened (no window between a check and the
    open), then made blocking again."""
    fd = os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_bytes(path: str | Path) -> bytes:
    """The bytes of a regular file (:func:`open_regular`)."""
    with os.fdopen(open_regular(path), "rb") as handle:
        return handle.read()


# ---------------------------------------------------------------- outputs a command writes


def _same_file(first: Path, second: Path) -> bool:
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def check_output(
    path: str | Path, inputs: Iterable[str | Path | None] = (), force: bool = False, option: str = "--output"
) -> Path:
    """Refuse (one-line :class:`ConfigError`, exit 2) to write a command's output at
    ``path`` where that would replace something the command did not just make:

    - always where ``path`` is one of the command's own ``inputs`` (same resolved path,
      or the same file through a link: ``os.path.samefile``), even with ``force``;
    - always where something other than a regular file is there (a folder, a FIFO, a
      device);
    - where a regular file is there, unless ``force`` (``--force``).

    Call it before any work starts, for every file the command writes."""
    path = Path(path)
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise ConfigError(
                f"{option} {path} is {source}, an input of this command: refused, even with --force "
                "(write the output elsewhere)"
            )
    if not os.path.lexists(path):
        return path
    kind = kind_of(path)
    if kind is not None:
        raise ConfigError(f"{option} {path} is {kind}: refused (only a regular file may be replaced)")
    if not force:
        raise ConfigError(f"{option} {path} exists: refused to replace it (--force replaces it)")
    return path


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
    with os.fdopen(open_regular(path), "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    """JSON of a regular file (a FIFO or device there: :class:`NotRegularFile`); a ValueError
    for text that is not UTF-8 or JSON, also JSON nested too deeply to parse."""
    try:
        return json.loads(read_text(path))
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None


def write_text(path: Path, text: str, mode: int = FILE_MODE) -> None:
    with atomic_path(path, mode) as tmp:
        tmp.write_text(text)


def read_text(path: Path) -> str:
    """Text of a regular file (a FIFO or device there: :class:`NotRegularFile`)."""
    return read_regular_bytes(path).decode()


def write_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def read_array(path: Path, mmap: bool = False) -> np.ndarray:
    return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)


def write_sparse(path: Path, matrix: sp.csr_matrix) -> None:
    """A CSR matrix as .npz (no pickles), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        sp.save_npz(handle, matrix, compressed=False)


def read_sparse(path: Path, mmap: bool = False) -> sp.csr_matrix:
    """A float32 CSR matrix written by :func:`write_sparse`. With ``mmap`` its arrays are
    memory-mapped from the file (written uncompressed): a slice of rows reads only those
    rows' pages, so a process that serves a shard of the rows holds that shard, not the
    matrix."""
    if mmap:
        arrays = _npz_memmaps(path)
        if arrays is not None and arrays["format"].item() in (b"csr", "csr"):
            matrix = sp.csr_matrix(
                (arrays["data"], arrays["indices"], arrays["indptr"]),
                shape=tuple(arrays["shape"]),
                copy=False,
            )
            if matrix.dtype == np.float32:
                return matrix
    return sp.csr_matrix(sp.load_npz(path), dtype=np.float32)


def _npz_memmaps(path: Path) -> dict[str, np.ndarray] | None:
    """Each array of an uncompressed .npz file memory-mapped in place (a stored zip
    member is the .npy file's bytes at an offset); None where a member is compressed."""
    import struct
    import zipfile

    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                return None
            handle.seek(info.header_offset)
            local = handle.read(30)  # the local file header: its name and extra field follow
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            handle.seek(info.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(handle)
            if dtype.hasobject:
                return None
            name = info.filename[: -len(".npy")]
            if not shape or 0 in shape:  # a scalar (the format's name) or an empty array
                size = int(np.prod(shape)) * dtype.itemsize
                arrays[name] = np.frombuffer(handle.read(size), dtype=dtype).reshape(shape)
                continue
            order = "F" if fortran else "C"
            arrays[name] = np.memmap(
                path, dtype=dtype, mode="r", offset=handle.tell(), shape=shape, order=order
            )
    return arrays


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


def hash_tree(
    directory: Path, skip: tuple[str, ...] = (), known: dict[str, tuple[int, str]] | None = None
) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every regular file below ``directory`` (relative POSIX paths),
    but hidden files and the names in ``skip``. ``known``: (size, sha256) of files whose
    writer hashed them as it wrote them: their size is checked, their bytes not read."""
    known = known or {}
    listed = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if path.is_symlink() or not path.is_file() or relative in skip:
            continue
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        size = path.stat().st_size
        if relative in known:
            if known[relative][0] != size:
                raise RunError(f"{path}: {size} bytes, its writer reported {known[relative][0]}")
            listed[relative] = {"size_bytes": size, "sha256": known[relative][1]}
            continue
        listed[relative] = {"size_bytes": size, "sha256": file_sha256(path)}
    return listed
