"""Atomic file writes and file hashes: the one place the package does either.

Every output is first written to a uniquely named temporary file in the destination folder and
then renamed over the destination, so a reader never sees a half-written file and a failed write
leaves the previous file untouched (and no temporary file behind). Temporary names carry the
process id and a random part (two writers never share one), and files are created with the
modes the umask gives (``0o666 & ~umask``), as ``open()`` would, not ``mkstemp``'s 0600.

:func:`file_lock` is the cross-process lock for read-modify-write files (the review log);
:func:`staged_folder` makes a whole output folder appear at once, or not at all.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cervicontour.errors import InputError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    The temporary name keeps the destination's suffixes (``.nii.gz``, ``.png``) so writers that
    pick a format by extension still work. Parent folders are created.

    Raises:
        InputError: ``path`` is a folder, or a path above it is a file.

    Example:
        >>> with atomic_path("out/plot.png") as tmp:   # doctest: +SKIP
        ...     fig.savefig(tmp)
    """
    path = check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{path}: a path above it is a file, not a folder; choose another output path") from None
    suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith(".nii.gz") else path.suffix
    tmp = temporary_name(path, suffix)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temporary_name(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A hidden name beside ``path`` unique to this process and call: ``.<name>.<pid>.<random><suffix>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock for ``path`` across processes (``fcntl.flock`` on ``.<name>.lock`` beside it).

    Every process (and thread) that reads, changes and rewrites ``path`` inside ``with
    file_lock(path):`` sees the others' writes: none is lost. The lock file is left in place (removing
    it would let a waiting process lock a file nobody else sees). Blocks until the lock is free.

    Example:
        >>> with file_lock("out/P1/review.json"):   # doctest: +SKIP
        ...     entries = read(); write([*entries, new])
    """
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def check_writable(path: str | os.PathLike, *, folder: bool = False) -> Path:
    """Refuse, before any work, an output path that cannot be written: a folder where a file is
    to go (or, with ``folder``, a file where a folder is to go), or a path under a file.

    Raises:
        InputError: what is in the way and what to do.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder; expected an output folder — choose another path")
    if not folder and path.is_dir():
        raise InputError(f"{path}: is a folder; expected the path of a file to write — choose another output path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{path}: {parent} is a file, not a folder; choose another output path")
            break
    return path


@contextmanager
def staged_folder(dest: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield a new, empty staging folder beside ``dest``; move its entries into ``dest`` when the
    block succeeds (with ``replace``: make it ``dest``), remove it when the block fails, with the
    folders made above ``dest`` for it (``dest`` is then left exactly as it was).

    An entry of ``dest`` with the name of a staged one is replaced (moved aside, then removed);
    other entries of ``dest`` stay. With ``replace``, ``dest`` is replaced as a whole and none of
    its entries stay (a DICOM series written again with fewer slices leaves no old slice). Staging
    beside ``dest`` keeps every move a rename on one file system; a replaced entry is put back if
    the rename onto it fails.

    Raises:
        InputError: ``dest`` (or a folder above it) exists and is not a folder.

    Example:
        >>> with staged_folder("out/pred") as stage:   # doctest: +SKIP
        ...     for case in cases:
        ...         write_case(stage, case)          # a failure here leaves out/pred untouched
    """
    dest = check_writable(dest, folder=True)
    made = [p for p in dest.parents if not p.exists()]  # deepest first
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        stage = temporary_name(dest, ".staging")
        stage.mkdir()
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{dest}: a path above it is a file, not a folder; choose another output folder") from None
    try:
        yield stage
        if replace:
            _move_onto(stage, dest)
        else:
            dest.mkdir(exist_ok=True)
            for entry in sorted(stage.iterdir()):
                _move_onto(entry, dest / entry.name)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # not empty: someone else's now
                break
        raise
    shutil.rmtree(stage, ignore_errors=True)


def _move_onto(source: Path, target: Path) -> None:
    """Rename ``source`` onto ``target``: a ``target`` already there is moved aside first, put back
    if the rename fails, and removed after it."""
    old = temporary_name(target, ".old") if target.exists() or target.is_symlink() else None
    if old is not None:
        os.replace(target, old)
    try:
        os.replace(source, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically and return the destination path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
