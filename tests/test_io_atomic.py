import hashlib

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
