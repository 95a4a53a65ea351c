import hashlib
import os
import stat
import subprocess
import sys

import pytest

from cervicontour.io.atomic import atomic_path, file_sha256, write_text_atomic


def test_text_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "report.html"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second ✓")
    assert path.read_text(encoding="utf-8") == "second ✓"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "mask.nii.gz"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
            tmp.write_bytes(b"half")
            raise RuntimeError("writer crashed")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.nii.gz"]


def test_file_sha256_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 9000  # crosses the 1 MiB block boundary
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_files_follow_the_umask_and_temporary_names_are_unique(tmp_path):
    from cervicontour.io.atomic import temporary_name

    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # 0o666 & ~0o022, not mkstemp's 0o600
    names = {temporary_name(path).name for _ in range(100)}
    assert len(names) == 100 and all(n.startswith(f".a.json.{os.getpid()}.") for n in names)


def test_file_lock_is_exclusive_across_processes(tmp_path):
    from cervicontour.io.atomic import file_lock

    target = tmp_path / "log.json"
    script = f"from cervicontour.io.atomic import file_lock\nwith file_lock({str(target)!r}):\n    print('locked', flush=True)"
    with file_lock(target):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            child.communicate(timeout=1.5)  # waits while this process holds the lock
    assert child.communicate(timeout=30)[0] == "locked\n" and child.returncode == 0
