"""ae_ot.io: atomic writes."""

import os

import pytest

from ae_ot.io import atomic_write


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_write_gives_the_file_the_mode_open_would(tmp_path, umask):
    # mkstemp's temporary file is private (0600): without a chmod every figure, metrics file and
    # checkpoint came out unreadable to the group and to others whatever the umask.
    previous = os.umask(umask)
    try:
        path = atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x"))
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(previous)
    assert path.read_text() == "x"
    assert (path.stat().st_mode & 0o777) == (os.stat(tmp_path / "plain.txt").st_mode & 0o777) == 0o666 & ~umask


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
