"""The one atomic writer (nanogpt_viz.atomic): a file is replaced whole or not at all."""
import ast
import os
from pathlib import Path

import pytest

from nanogpt_viz.atomic import (atomic_copy, atomic_file, atomic_path, atomic_write_bytes, atomic_write_text,
                                 is_temp_name)

PKG = Path(__file__).resolve().parents[1] / "nanogpt_viz"


def test_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "run.json"
    atomic_write_text(target, "first\n")
    atomic_write_text(target, "second\n")
    assert target.read_text() == "second\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["run.json"]


def test_error_mid_write_keeps_the_old_file_and_removes_the_partial_one(tmp_path):
    target = tmp_path / "ckpt.pt"
    target.write_bytes(b"old contents")
    seen = []
    with pytest.raises(RuntimeError, match="disk went away"):
        with atomic_file(target, "wb") as f:
            f.write(b"half of the new")
            seen.append(Path(f.name).name)
            raise RuntimeError("disk went away")
    assert target.read_bytes() == b"old contents"
    assert list(tmp_path.iterdir()) == [target]
    # the partial file was a hidden sibling carrying our pid (checkpoint.remove_stale_temps relies on it)
    assert seen[0].startswith(f".ckpt.pt.{os.getpid()}-") and is_temp_name(seen[0])


def test_target_is_untouched_until_the_block_ends(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"before")
    with atomic_path(target) as tmp:
        Path(tmp).write_bytes(b"after")
        assert target.read_bytes() == b"before"
    assert target.read_bytes() == b"after"


def test_suffix_lets_a_writer_pick_its_format(tmp_path):
    with atomic_path(tmp_path / "plot.png", suffix=".tmp.png") as tmp:
        assert tmp.endswith(".tmp.png")
        Path(tmp).write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png"


def test_copy(tmp_path):
    src = tmp_path / "src.pt"
    src.write_bytes(os.urandom(100_000))
    dst = atomic_copy(src, tmp_path / "out" / "copy.pt")
    assert dst.read_bytes() == src.read_bytes()


def test_missing_folder_is_an_error_when_asked_not_to_create_it(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_file(tmp_path / "nope" / "x.bin", mkdir=False) as f:
            f.write(b"x")
    assert not (tmp_path / "nope").exists()


def test_no_other_module_renames_files_into_place():
    """One atomic writer: os.replace / os.rename / mkstemp appear only in nanogpt_viz/atomic.py."""
    offenders = []
    for path in PKG.rglob("*.py"):
        if path.name == "atomic.py" and path.parent == PKG:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("replace", "rename", "mkstemp") \
                    and isinstance(node.value, ast.Name) and node.value.id in ("os", "tempfile"):
                offenders.append(f"{path.relative_to(PKG)}:{node.lineno} {node.value.id}.{node.attr}")
    assert offenders == []


def test_new_files_get_the_usual_mode_not_mkstemps_0600(tmp_path):
    """A prepared train.bin or a checkpoint is readable by others as any new file is (0666 less the umask;
    nanoGPT's prepare.py writes 0644 under the usual 022)."""
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "train.bin", b"\x00\x01")
    finally:
        os.umask(old)
    assert (tmp_path / "train.bin").stat().st_mode & 0o777 == 0o644
