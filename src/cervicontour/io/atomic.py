"""Atomic file writes and file hashes: the one place the package does either.

Every output is first written to a uniquely named temporary file in the destination folder and
then renamed over the destination, so a reader never sees a half-written file and a failed write
leaves the previous file untouched (and no temporary file behind). Temporary names carry the
process id and a random part (two writers never share one), and files are created with the
modes the umask gives (``0o666 & ~umask``), as ``open()`` would, not ``mkstemp``'s 0600.

:func:`file_lock` is the cross-process lock for read-modify-write files (the review log).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    The temporary name keeps the destination's suffixes (``.nii.gz``, ``.png``) so writers that
    pick a format by extension still work. Parent folders are created.

    Example:
        >>> with atomic_path("out/plot.png") as tmp:   # doctest: +SKIP
        ...     fig.savefig(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
