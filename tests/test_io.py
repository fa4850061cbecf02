import pytest

from il2pkpd._io import atomic_path, atomic_write_text, mark_complete, mark_incomplete


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_atomic_write_replaces_content(tmp_path):
    target = atomic_write_text(tmp_path / "a" / "b.txt", "new")
    assert target.read_text() == "new"


def test_complete_marker_roundtrip(tmp_path):
    mark_complete(tmp_path)
    assert (tmp_path / "_COMPLETE").exists()
    mark_incomplete(tmp_path)
    assert not (tmp_path / "_COMPLETE").exists()
