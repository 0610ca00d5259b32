"""The one way this package writes a file the user keeps: all or nothing.

Every writer (checkpoints, token files, the corpus cache, run.json, the history header, exported plots,
copied checkpoints) goes through `atomic_path`: the bytes go to a hidden temporary sibling
`.NAME.PID-XXXXXXXX.tmp` in the same folder, are flushed and fsynced, and only then renamed over NAME
(`os.replace`, atomic on one filesystem). A crash, a full disk or an exception mid-write leaves the
previous file as it was and removes the partial one; the PID in the name lets a later run tell a
dead writer's leftovers from a live one's (checkpoint.remove_stale_temps).

Pure: no Qt, no torch.
"""
from __future__ import annotations

import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

TEMP_SUFFIX = ".tmp"


def temp_prefix(path: str | os.PathLike) -> str:
    """The start of a temporary sibling's name for `path`: `.NAME.PID-`."""
    return f".{Path(path).name}.{os.getpid()}-"


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of our temporary siblings (hidden, ending in .tmp)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def _fsync_file(name: str) -> None:
    fd = os.open(name, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (best effort: some systems cannot open a folder)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_temp(path: Path, suffix: str) -> str:
    """Create the empty temporary sibling. Not mkstemp: its files are 0600, and a prepared train.bin or a
    checkpoint must get the modes any new file gets (0666 less the umask, 0644 as a rule), as nanoGPT's do."""
    for _ in range(100):
        name = str(path.parent / f"{temp_prefix(path)}{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


@contextmanager
def atomic_path(path: str | os.PathLike, *, mkdir: bool = True, suffix: str = TEMP_SUFFIX) -> Iterator[str]:
    """Yield the name of an empty temporary sibling of `path`; write it (by name) inside the block.

    On leaving the block normally the temporary file is fsynced and renamed over `path`; on any
    exception it is removed and the exception goes on. `path` is never touched before the rename.
    `suffix` ends the temporary name (".tmp"; ".tmp.png" for a writer that picks the format by it).
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path, suffix)
    try:
        yield tmp
        _fsync_file(tmp)  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)  # and the rename itself


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None,
                mkdir: bool = True) -> Iterator[IO]:
    """`atomic_path` with the temporary file opened (`mode` "wb" or "w"); closed before the rename."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file writes a new file: mode 'wb' or 'w', not {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path, mkdir=mkdir) as tmp:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy `src` to `dst` so that a reader of `dst` never sees half a file; returns `dst`."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


__all__ = ["TEMP_SUFFIX", "temp_prefix", "is_temp_name", "atomic_path", "atomic_file", "atomic_write_bytes",
           "atomic_write_text", "atomic_copy"]
