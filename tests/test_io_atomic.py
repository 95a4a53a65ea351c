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


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_staged_folder_moves_entries_in_or_replaces_the_whole_folder(tmp_path):
    from cervicontour.io.atomic import staged_folder

    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("other")
    (dest / "a.txt").write_text("old a")
    with staged_folder(dest) as stage:
        (stage / "a.txt").write_text("new a")
        (stage / "b.txt").write_text("new b")
    assert _tree(dest) == {"a.txt": "new a", "b.txt": "new b", "keep.txt": "other"}  # entries moved in, others stay
    with staged_folder(dest, replace=True) as stage:
        (stage / "CT_0001.dcm").write_text("slice 1")
    assert _tree(dest) == {"CT_0001.dcm": "slice 1"}  # replaced as a whole: nothing of the old folder stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or moved-aside folder left


@pytest.mark.parametrize("replace", [False, True])
def test_a_failed_staged_folder_leaves_dest_as_it_was_and_no_folder_made_for_it(tmp_path, replace):
    from cervicontour.io.atomic import staged_folder

    with pytest.raises(RuntimeError):
        with staged_folder(tmp_path / "a" / "b" / "out", replace=replace) as stage:
            (stage / "x.txt").write_text("half")
            raise RuntimeError("writer crashed")
    assert list(tmp_path.iterdir()) == []  # no staging folder, and a/b/ made for it removed again
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "x.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(dest, replace=replace) as stage:
            (stage / "x.txt").write_text("half")
            raise RuntimeError("writer crashed")
    assert _tree(dest) == {"x.txt": "old"} and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_rename_puts_the_replaced_folder_back(tmp_path, monkeypatch):
    import cervicontour.io.atomic as atomic

    dest = tmp_path / "CT"
    dest.mkdir()
    (dest / "CT_0001.dcm").write_text("old")
    real, calls = os.replace, []

    def failing(src, dst):  # the second rename (the staged folder onto dest) fails
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("no space left")
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    with pytest.raises(OSError, match="no space left"):
        with atomic.staged_folder(dest, replace=True) as stage:
            (stage / "CT_0001.dcm").write_text("new")
    assert _tree(dest) == {"CT_0001.dcm": "old"} and sorted(p.name for p in tmp_path.iterdir()) == ["CT"]
