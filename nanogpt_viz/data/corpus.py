"""Token corpora: one read-only view over every token-file layout nanoGPT-style code uses.

Formats (chosen by content, the extension only breaks ties):

* ``nanogpt-bin`` / ``nanogpt-dir``: raw little-endian uint16, no header (nanoGPT's
  ``prepare.py``).  ``train.bin`` picks up a sibling ``val.bin``; ``meta.pkl`` supplies
  ``vocab_size`` (read with a restricted unpickler that never runs code).
* ``llmc`` / ``llmc-dir``: llm.c / modded-nanogpt shards, 256 int32 header
  (magic 20240520 + version 1 + uint16 tokens, or magic 20240801 + version 7 + uint32).
* ``npy`` / ``npy-dir``: build-nanogpt ``.npy`` shards (1-D uint16 / int32 / uint32).
* ``text``: UTF-8 text (invalid bytes replaced and counted, newlines read as Python's text
  mode reads them), split into train/val by characters and each part tokenized with GPT-2
  exactly as nanoGPT's ``data/shakespeare/prepare.py`` does, cached as nanoGPT ``.bin`` files
  keyed by the file's content hash and the split point.
* ``text-dir``: a folder of UTF-8 text files, one document each, joined in sorted file-name order as
  GPT-2's data was: each file is tokenized on its own (``encode_ordinary``, so a literal
  ``<|endoftext|>`` in a file stays text) and followed by the single ``<|endoftext|>`` token (50256),
  as nanoGPT's ``data/openwebtext/prepare.py`` appends it to each document. Cached as one ``.bin`` keyed
  by the folder's content (each file's name and bytes); the val split is the last fraction of the tokens.

Everything is memory-mapped read-only: opening costs the same for 1 MB and 20 GB.
Token ids are checked against the vocabulary on open only in a bounded sample (the
first and last ``OPEN_VALIDATE_TOKENS // 2`` tokens of each split);
``TokenCorpus.validate(max_tokens=None)`` scans everything.

Pure module: numpy + tiktoken (via ``nanogpt_viz.data.tokenizer``) only.
"""
from __future__ import annotations

import builtins
import codecs
import collections
import contextlib
import hashlib
import io
import json
import operator
import os
import pickle
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Sequence

import numpy as np

from nanogpt_viz.atomic import atomic_file
from nanogpt_viz.data import tokenizer as _tok

__all__ = [
    "CorpusError", "Cancelled", "TokenArray", "TokenCorpus", "open_corpus", "tokenize_text_file",
    "default_corpus", "default_cache_dir", "write_nanogpt_bin", "write_llmc_shard", "write_npy_shard",
    "FORMATS", "DEFAULT_CORPUS_NAME", "OPEN_VALIDATE_TOKENS", "UndecodableText", "UNDECODABLE_MAX", "path_problem",
    "text_documents",
]

FORMATS = ("text", "text-dir", "nanogpt-bin", "nanogpt-dir", "llmc", "llmc-dir", "npy", "npy-dir")
DEFAULT_CORPUS_NAME = "Python language reference (built-in)"
OPEN_VALIDATE_TOKENS = 4_000_000  # per split, on open: first 2M + last 2M token ids checked

LLMC_HEADER_INTS = 256
LLMC_HEADER_BYTES = LLMC_HEADER_INTS * 4
LLMC_FORMATS = {20240520: (1, np.dtype("<u2")), 20240801: (7, np.dtype("<u4"))}  # magic -> (version, dtype)
NPY_DTYPES = (np.dtype(np.uint16), np.dtype(np.int32), np.dtype(np.uint32))
_NPY_MAGIC = b"\x93NUMPY"
_SNIFF_BYTES = 64 * 1024
_CACHE_VERSION = 2  # 2: text cut into train/val by characters, as nanoGPT's prepare.py

_ACCEPTED = ("Accepted: UTF-8 text, nanoGPT .bin (raw uint16 tokens, e.g. train.bin/val.bin), "
             "llm.c / modded-nanogpt shards (.bin with a 256-int32 header), build-nanogpt .npy shards, "
             "or a folder of those; or a folder of text files (one document each).")

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


class CorpusError(ValueError):
    """A path cannot be used as a corpus. The message is a complete user-facing sentence."""


class UndecodableText(CorpusError):
    """More of a text file than UNDECODABLE_MAX is not UTF-8 (probably Latin-1, UTF-16 or binary data).

    ``fraction`` and ``replaced`` say how much; opening again with ``accept_undecodable=True`` uses the
    tokens anyway (they are cached by then, so that second open is instant).
    """

    def __init__(self, message: str, *, path: Path, replaced: int, total: int):
        super().__init__(message)
        self.path, self.replaced, self.total = path, replaced, total

    @property
    def fraction(self) -> float:
        return self.replaced / self.total if self.total else 0.0


# above this share of bytes that are not UTF-8, a text is refused unless the caller accepts it
UNDECODABLE_MAX = 0.02


def path_problem(path) -> str | None:
    """Why `path` cannot be read as a corpus file or folder, in a sentence; None when it can be tried.

    Names what the thing is: missing, a symlink loop, a dangling symlink, a named pipe, a device, a
    socket, a virtual file (its size reads 0 but it has content: /proc, /sys), or empty.
    """
    import stat as _stat

    p = Path(os.fspath(path)).expanduser()
    try:
        st = os.stat(p)
    except OSError as e:
        if e.errno == getattr(__import__("errno"), "ELOOP", 40):
            return f"{p} is a symlink loop (following its links leads back to itself); point at the file itself."
        if os.path.islink(p):
            return f"{p} is a symlink to {os.readlink(p)}, which does not exist."
        if isinstance(e, FileNotFoundError) or e.errno == 2:
            return f"There is no file or folder at {p}."
        if isinstance(e, PermissionError):
            return f"{p} cannot be read: permission denied."
        return f"Cannot read {p}: {e.strerror or e}."
    mode = st.st_mode
    if _stat.S_ISDIR(mode):
        if not os.access(p, os.R_OK | os.X_OK):
            return f"The folder {p} cannot be read: permission denied."
        return None
    kinds = ((_stat.S_ISFIFO, "a named pipe (FIFO)"), (_stat.S_ISCHR, "a character device"),
             (_stat.S_ISBLK, "a block device"), (_stat.S_ISSOCK, "a socket"))
    for test, what in kinds:
        if test(mode):
            return f"{p} is {what}, not a regular file; a corpus must be a file or a folder of files."
    if not _stat.S_ISREG(mode):
        return f"{p} is not a regular file; a corpus must be a file or a folder of files."
    if not os.access(p, os.R_OK):
        return f"{p} cannot be read: permission denied."
    if st.st_size == 0:
        try:
            with open(p, "rb") as f:
                has_content = bool(f.read(1))
        except OSError:
            has_content = False
        if has_content:
            return (f"{p} is a virtual file (its size reads 0 but it has content, as files under /proc and /sys "
                    f"do), not a corpus; copy it into a regular file first.")
        return f"{p} is empty."
    return None


class Cancelled(Exception):
    """The user cancelled a long operation (no partial output was left behind)."""


# ---------------------------------------------------------------------------------------------
# TokenArray


class TokenArray:
    """Read-only 1-D token sequence made of one or more (memory-mapped) parts glued end to end.

    ``ta[i]`` -> int, ``ta[a:b]`` -> np.ndarray (a zero-copy read-only view when the range lies
    in one part, a copy when it spans parts), ``ta[index_array]`` -> np.ndarray.
    """

    __slots__ = ("_parts", "_ends", "_len", "dtype", "_names")

    def __init__(self, parts: Sequence[np.ndarray], dtype=None, names: Sequence[str] | None = None):
        names = list(names) if names is not None else [f"part {k}" for k in range(len(parts))]
        if len(names) != len(parts):
            raise ValueError("TokenArray needs one name per part")
        self._names = tuple(n for n, p in zip(names, parts) if len(p))
        parts = [p for p in parts if len(p)]
        for p in parts:
            if p.ndim != 1:
                raise ValueError("TokenArray parts must be 1-D")
        self._parts: tuple[np.ndarray, ...] = tuple(parts)
        self._ends = np.cumsum([len(p) for p in parts], dtype=np.int64) if parts else np.zeros(0, np.int64)
        self._len = int(self._ends[-1]) if parts else 0
        if dtype is not None:
            self.dtype = np.dtype(dtype)
        elif parts:
            self.dtype = np.result_type(*(p.dtype for p in parts))
        else:
            self.dtype = np.dtype(np.uint16)

    # -- basics
    def __len__(self) -> int:
        return self._len

    @property
    def n_parts(self) -> int:
        return len(self._parts)

    @property
    def parts(self) -> tuple[np.ndarray, ...]:
        return self._parts

    @property
    def part_names(self) -> tuple[str, ...]:
        """The file name of each part (a shard), in stream order."""
        return self._names

    def __repr__(self) -> str:
        return f"<TokenArray {self._len:,} tokens, {self.dtype}, {len(self._parts)} part(s)>"

    def _starts(self) -> np.ndarray:
        return self._ends - np.array([len(p) for p in self._parts], dtype=np.int64)

    def _locate(self, i: int) -> tuple[int, int]:
        k = int(np.searchsorted(self._ends, i, side="right"))
        return k, i - (int(self._ends[k - 1]) if k else 0)

    def __iter__(self):  # pragma: no cover - convenience for small arrays
        for p in self._parts:
            for off in range(0, len(p), 1 << 16):
                yield from (int(x) for x in p[off:off + (1 << 16)])

    def __array__(self, dtype=None, copy=None):
        out = self._range(0, self._len)
        return out if dtype is None else out.astype(dtype)

    # -- indexing
    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(self._len)
            if step == 1:
                return self._range(start, stop)
            return self.take(np.arange(start, stop, step, dtype=np.int64))
        if isinstance(key, (np.ndarray, list)):
            return self.take(key)
        try:
            i = operator.index(key)
        except TypeError:
            raise TypeError(f"TokenArray indices must be int, slice or int array, not {type(key).__name__}") from None
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"token index {key} out of range for {self._len} tokens")
        k, off = self._locate(i)
        return int(self._parts[k][off])

    def _range(self, a: int, b: int) -> np.ndarray:
        if b <= a:
            return np.empty(0, dtype=self.dtype)
        k0, o0 = self._locate(a)
        k1, o1 = self._locate(b - 1)
        if k0 == k1:
            out = np.asarray(self._parts[k0][o0:o1 + 1])
            return out if out.dtype == self.dtype else out.astype(self.dtype)
        pieces = [self._parts[k0][o0:]]
        pieces += [self._parts[k] for k in range(k0 + 1, k1)]
        pieces.append(self._parts[k1][:o1 + 1])
        return np.concatenate([np.asarray(p) for p in pieces]).astype(self.dtype, copy=False)

    def take(self, indices) -> np.ndarray:
        """Tokens at arbitrary positions (any shape), as an array of ``self.dtype``."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return np.empty(idx.shape, dtype=self.dtype)
        idx = np.where(idx < 0, idx + self._len, idx)
        if idx.min() < 0 or idx.max() >= self._len:
            raise IndexError(f"token index out of range for {self._len} tokens")
        if len(self._parts) == 1:
            return np.asarray(self._parts[0][idx]).astype(self.dtype, copy=False)
        flat = idx.ravel()
        out = np.empty(flat.shape, dtype=self.dtype)
        k = np.searchsorted(self._ends, flat, side="right")
        starts = self._starts()
        for part_no in np.unique(k):
            m = k == part_no
            out[m] = self._parts[part_no][flat[m] - starts[part_no]]
        return out.reshape(idx.shape)

    def gather(self, starts, width: int) -> np.ndarray:
        """Rows ``self[s:s+width]`` for each s in ``starts``: int64 array (len(starts), width)."""
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        width = operator.index(width)
        if width < 0:
            raise ValueError("width must be >= 0")
        n = len(starts)
        out = np.empty((n, width), dtype=np.int64)
        if n == 0 or width == 0:
            return out
        if starts.min() < 0 or int(starts.max()) + width > self._len:
            raise IndexError(f"gather rows [s, s+{width}) must lie within 0..{self._len}")
        if len(self._parts) == 1:
            win = np.lib.stride_tricks.sliding_window_view(self._parts[0], width)
            out[:] = win[starts]
            return out
        k0 = np.searchsorted(self._ends, starts, side="right")
        k1 = np.searchsorted(self._ends, starts + (width - 1), side="right")
        part_starts = self._starts()
        inside = k0 == k1
        for part_no in np.unique(k0[inside]):
            rows = np.nonzero(inside & (k0 == part_no))[0]
            part = self._parts[part_no]
            win = np.lib.stride_tricks.sliding_window_view(part, width)
            out[rows] = win[starts[rows] - part_starts[part_no]]
        for r in np.nonzero(~inside)[0]:
            s = int(starts[r])
            out[r] = self._range(s, s + width)
        return out

    # -- views
    def view(self, start: int, stop: int) -> "TokenArray":
        """A TokenArray over tokens [start, stop) sharing the same memory maps (nothing is read)."""
        start, stop, _ = slice(start, stop).indices(self._len)
        stop = max(start, stop)
        parts, names = [], []
        pos = 0
        for p, name in zip(self._parts, self._names):
            a, b = pos, pos + len(p)
            lo, hi = max(a, start), min(b, stop)
            if lo < hi:
                parts.append(p[lo - a:hi - a])
                names.append(name)
            pos = b
        return TokenArray(parts, dtype=self.dtype, names=names)

    def iter_chunks(self, start: int = 0, stop: int | None = None,
                    chunk: int = 1 << 22) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (offset, array) over [start, stop) in pieces of at most ``chunk`` tokens."""
        stop = self._len if stop is None else min(stop, self._len)
        pos = 0
        for p in self._parts:
            a, b = pos, pos + len(p)
            lo, hi = max(a, start), min(b, stop)
            for off in range(lo, hi, chunk):
                yield off, np.asarray(p[off - a:min(off + chunk, hi) - a])
            pos = b


# ---------------------------------------------------------------------------------------------
# TokenCorpus


class TokenCorpus:
    """A named token stream with a train split and, usually, a val split."""

    def __init__(self, path: Path, name: str, fmt: str, splits: dict[str, TokenArray], *,
                 vocab_size: int = _tok.VOCAB_SIZE, notes: list[str] | None = None,
                 files: list[Path] | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"unknown corpus format {fmt!r}")
        self.path = Path(path)
        self.name = name
        self.fmt = fmt
        self.vocab_size = int(vocab_size)
        self.notes: list[str] = list(notes or [])
        self.files: list[Path] = list(files or [self.path])
        self._splits = dict(splits)
        self.undecodable_bytes = 0  # text: bytes that were not UTF-8 (replaced with U+FFFD)
        self.source_bytes = 0  # text: the file's size
        self.doc_tokens: list[int] | None = None  # text-dir: tokens of each document, its <|endoftext|> included

    def split(self, name: str) -> TokenArray:
        if name not in ("train", "val"):
            raise CorpusError(f"There is no split called {name!r}; use 'train' or 'val'.")
        arr = self._splits.get(name)
        if arr is None:
            raise CorpusError(f"The corpus {self.name} has no {name} split.")
        return arr

    def has_split(self, name: str) -> bool:
        return name in self._splits and self._splits[name] is not None

    @property
    def train(self) -> TokenArray:
        return self.split("train")

    @property
    def val(self) -> TokenArray:
        return self.split("val")

    @property
    def total_tokens(self) -> int:
        return sum(len(a) for a in self._splits.values())

    def __len__(self) -> int:
        return len(self.split("train"))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v):,}" for k, v in self._splits.items())
        return f"<TokenCorpus {self.name!r} {self.fmt} {sizes} vocab={self.vocab_size}>"

    def validate(self, max_tokens: int | None = 50_000_000, *, chunk: int = 1 << 22) -> int:
        """Check token ids are in [0, vocab_size); raise CorpusError on the first bad one.

        Scans each split fully when it has at most ``max_tokens`` tokens (``None``: always),
        otherwise its first and last ``max_tokens // 2`` tokens. Returns tokens scanned.
        """
        scanned = 0
        for split_name, arr in self._splits.items():
            n = len(arr)
            if max_tokens is None or n <= max_tokens:
                ranges = [(0, n)]
            else:
                half = max(1, max_tokens // 2)
                ranges = [(0, half), (n - half, n)]
            signed = arr.dtype.kind == "i"
            for a, b in ranges:
                for off, block in arr.iter_chunks(a, b, chunk):
                    scanned += len(block)
                    if not len(block):
                        continue
                    hi = int(block.max())
                    if hi >= self.vocab_size:
                        pos = off + int(np.argmax(block >= self.vocab_size))
                        raise CorpusError(
                            f"token id {int(arr[pos])} at position {pos} is >= vocab size {self.vocab_size} "
                            f"(in the {split_name} split of {self.path}); the file does not hold token ids "
                            f"for this vocabulary.")
                    if signed and int(block.min()) < 0:
                        pos = off + int(np.argmax(block < 0))
                        raise CorpusError(
                            f"token id {int(arr[pos])} at position {pos} is negative "
                            f"(in the {split_name} split of {self.path}); the file does not hold token ids.")
        return scanned


# ---------------------------------------------------------------------------------------------
# helpers: paths, atomic writes


def default_cache_dir() -> Path:
    """$NANOGPT_VIZ_CACHE, else $XDG_CACHE_HOME/nanogpt-viz, else ~/.cache/nanogpt-viz."""
    env = os.environ.get("NANOGPT_VIZ_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "nanogpt-viz"
    return Path.home() / ".cache" / "nanogpt-viz"


def _atomic_write(path) -> ContextManager[io.BufferedWriter]:
    """A binary file written all or nothing (nanogpt_viz.atomic); the folder must exist."""
    return atomic_file(path, "wb", mkdir=False)


def _as_int_array(tokens, lo: int, hi: int, what: str) -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size and arr.dtype.kind not in "iu":
        raise CorpusError(f"{what} needs integer token ids, got dtype {arr.dtype}.")
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        raise CorpusError(f"{what} needs token ids in {lo}..{hi}; got {int(arr.min())}..{int(arr.max())}.")
    return arr


def write_nanogpt_bin(path, tokens) -> None:
    """Write tokens as a nanoGPT .bin (raw little-endian uint16), atomically."""
    arr = _as_int_array(tokens, 0, 0xFFFF, "A nanoGPT .bin").astype("<u2", copy=False)
    with _atomic_write(path) as f:
        f.write(memoryview(np.ascontiguousarray(arr)).cast("B"))


def write_llmc_shard(path, tokens, version: int = 1) -> None:
    """Write an llm.c shard: version 1 (magic 20240520, uint16) or 7 (magic 20240801, uint32)."""
    by_version = {v: (magic, dt) for magic, (v, dt) in LLMC_FORMATS.items()}
    if version not in by_version:
        raise ValueError(f"llm.c shard version must be 1 or 7, not {version!r}")
    magic, dt = by_version[version]
    arr = _as_int_array(tokens, 0, np.iinfo(dt).max, f"An llm.c v{version} shard").astype(dt, copy=False)
    if len(arr) > np.iinfo(np.int32).max:
        raise CorpusError("An llm.c shard holds at most 2**31-1 tokens; split the data into more shards.")
    header = np.zeros(LLMC_HEADER_INTS, dtype="<i4")
    header[:3] = (magic, version, len(arr))
    with _atomic_write(path) as f:
        f.write(header.tobytes())
        f.write(memoryview(np.ascontiguousarray(arr)).cast("B"))


def write_npy_shard(path, tokens, dtype=np.uint16) -> None:
    """Write a 1-D .npy token shard (uint16, int32 or uint32), atomically."""
    dt = np.dtype(dtype)
    if dt not in NPY_DTYPES:
        raise ValueError(f"npy token shards must be uint16, int32 or uint32, not {dt}")
    info = np.iinfo(dt)
    arr = _as_int_array(tokens, max(0, info.min), info.max, f"A {dt} .npy shard").astype(dt, copy=False)
    with _atomic_write(path) as f:
        np.save(f, np.ascontiguousarray(arr), allow_pickle=False)


# ---------------------------------------------------------------------------------------------
# text tokenization

_count_local = threading.local()
_ERRORS = "nanogpt_viz.count_replace"


def _count_replace(exc):
    """Exactly errors='replace' for decoding, but counts the replaced bytes (per thread)."""
    if isinstance(exc, UnicodeDecodeError):
        _count_local.n = getattr(_count_local, "n", 0) + (exc.end - exc.start)
        return "\ufffd", exc.end
    raise exc


codecs.register_error(_ERRORS, _count_replace)

# A chunk boundary at i is safe when text[i] is ' ' or '\n' and text[i+1] is not whitespace
# (str.isspace is a superset of the regex's Unicode \s). Then both GPT-2 pre-tokenizations agree:
# no pre-token contains whitespace except a single leading ' ' or a pure-whitespace run; the
# run ending at i-1 (if any) is matched by `\s++$` at the end of the left chunk exactly as by
# `\s+(?!\S)` in the whole text, and the right chunk starts with the same match as in the whole text.
_CUT_RE = re.compile(r"[ \n](?=\S)")


def _default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class _Tokenized(tuple):
    """What `_tokenize_stream` returns: counts per part, replaced bytes, content hash, characters."""

    __slots__ = ()

    def __new__(cls, n_train: int, n_val: int, n_replaced: int, digest: str, n_chars: int):
        return super().__new__(cls, (n_train, n_val, n_replaced, digest, n_chars))

    n_train = property(operator.itemgetter(0))
    n_val = property(operator.itemgetter(1))
    n_replaced = property(operator.itemgetter(2))
    digest = property(operator.itemgetter(3))
    n_chars = property(operator.itemgetter(4))


def _text_decoder(universal_newlines: bool):
    """UTF-8 (invalid bytes replaced and counted); with `universal_newlines`, \\r\\n and \\r read as \\n
    exactly as Python's text mode (`open(path, 'r')`, what nanoGPT's prepare.py uses) reads them."""
    dec = codecs.getincrementaldecoder("utf-8")(errors=_ERRORS)
    return io.IncrementalNewlineDecoder(dec, translate=True) if universal_newlines else dec


def _tokenize_stream(fobj, total: int, out_bin: Path, *, progress: Progress | None, cancel: Cancel | None,
                     chunk_chars: int = 1 << 20, read_bytes: int = 4 << 20,
                     num_threads: int | None = None, universal_newlines: bool = False,
                     split_at: int | None = None, out_val: Path | None = None) -> _Tokenized:
    """Tokenize a binary stream of UTF-8 into a nanoGPT .bin.

    With ``split_at`` (a character index) and ``out_val``, the text before that character goes to
    ``out_bin`` and the text from it on to ``out_val``, each tokenized on its own (as nanoGPT's
    prepare.py encodes ``data[:i]`` and ``data[i:]`` separately). Both files are written atomically.
    """
    enc = _tok.get_encoding()
    if chunk_chars < 1 or read_bytes < 1:
        raise ValueError("chunk_chars and read_bytes must be >= 1")
    if (split_at is None) != (out_val is None) or (split_at is not None and split_at < 0):
        raise ValueError("split_at (>= 0) and out_val go together")
    nthreads = num_threads or _default_threads()
    decoder = _text_decoder(universal_newlines)
    hasher = hashlib.blake2b(digest_size=16)
    _count_local.n = 0
    counts = [0, 0]
    part = 1 if split_at == 0 else 0  # 0: before split_at (train), 1: from split_at on (val)
    bytes_read = 0
    inflight: collections.deque = collections.deque()
    reported = [-1]  # last progress value sent (each value is reported once, ending with total)
    chars_decoded = 0
    chars_sent = 0  # also: the index in the whole text of pending[start]

    def encode(piece: str) -> np.ndarray:
        return enc.encode_to_numpy(piece, disallowed_special=())  # == encode_ordinary, as uint32

    def check_cancel():
        if cancel is not None and cancel():
            raise Cancelled("Tokenization was cancelled.")

    with contextlib.ExitStack() as stack:
        outs = [stack.enter_context(_atomic_write(out_bin))]
        if out_val is not None:
            outs.append(stack.enter_context(_atomic_write(out_val)))
        pool = stack.enter_context(ThreadPoolExecutor(nthreads))

        def drain(limit: int):
            while len(inflight) > limit:
                fut, done, k = inflight.popleft()
                ids = fut.result()
                if len(ids) and int(ids.max()) > 0xFFFF:  # impossible for GPT-2; guard the format
                    raise CorpusError("A token id does not fit the uint16 .bin format.")
                outs[k].write(memoryview(ids.astype("<u2")))
                counts[k] += len(ids)
                if progress is not None and min(done, total) > reported[0]:
                    reported[0] = min(done, total)
                    progress(reported[0], total)
                check_cancel()

        pending = ""
        eof = False
        while not eof:
            check_cancel()
            data = fobj.read(read_bytes)
            if data:
                bytes_read += len(data)
                hasher.update(data)
                text = decoder.decode(data)
            else:
                eof = True
                text = decoder.decode(b"", final=True)
            chars_decoded += len(text)
            pending += text
            del text
            start = 0
            while True:
                if part == 0 and split_at is not None and chars_sent >= split_at:
                    part = 1
                # where the current part's text ends as far as it is known: the split point once it has
                # been read (a cut is then safe only by the part's own text), else the text read so far
                limit, part_ends = len(pending), eof
                if part == 0 and split_at is not None and split_at - chars_sent <= len(pending) - start:
                    limit, part_ends = start + (split_at - chars_sent), True
                remaining = limit - start
                if remaining <= 0:
                    break
                if remaining < 2 * chunk_chars:
                    if not part_ends:
                        break
                    cut = limit
                else:
                    m = _CUT_RE.search(pending, start + chunk_chars, limit)
                    if m is None:
                        if not part_ends:
                            break  # no safe point yet: read more text
                        cut = limit
                    else:
                        cut = m.start()
                chars_sent += cut - start
                # bytes behind the text sent so far, estimated from the bytes/char ratio read so far
                done = min(bytes_read, (chars_sent * bytes_read) // max(chars_decoded, 1))
                inflight.append((pool.submit(encode, pending[start:cut]), done, part))
                start = cut
                drain(2 * nthreads)
            if start:
                pending = pending[start:]
        drain(0)
        if progress is not None and reported[0] < total:
            progress(total, total)
    return _Tokenized(counts[0], counts[1], int(getattr(_count_local, "n", 0)), hasher.hexdigest(), chars_decoded)


def tokenize_text_file(path, out_bin, *, progress: Progress | None = None, cancel: Cancel | None = None,
                       chunk_chars: int = 1 << 20, num_threads: int | None = None,
                       read_bytes: int = 4 << 20) -> tuple[int, int]:
    """Tokenize a UTF-8 text file (GPT-2, encode_ordinary) into a nanoGPT uint16 .bin, atomically.

    Invalid UTF-8 is replaced by U+FFFD. Returns (n_tokens, n_replaced_bytes). ``progress(done,
    total)`` reports bytes; ``cancel()`` returning True raises Cancelled and leaves no output file.
    """
    path = Path(path)
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        r = _tokenize_stream(f, total, Path(out_bin), progress=progress, cancel=cancel,
                             chunk_chars=chunk_chars, read_bytes=read_bytes, num_threads=num_threads)
    return r.n_train, r.n_replaced


def _hash_file(path: Path, cancel: Cancel | None) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while True:
            if cancel is not None and cancel():
                raise Cancelled("Reading was cancelled.")
            data = f.read(8 << 20)
            if not data:
                break
            h.update(data)
    return h.hexdigest()


def _count_chars(make_stream, cancel: Cancel | None) -> int:
    """How many characters the text has as nanoGPT reads it: ``len(open(path, encoding='utf-8').read())``."""
    decoder = _text_decoder(True)
    n = 0
    with make_stream() as f:
        while True:
            if cancel is not None and cancel():
                raise Cancelled("Reading was cancelled.")
            data = f.read(8 << 20)
            n += len(decoder.decode(data, final=not data))
            if not data:
                return n


def _char_cut(n_chars: int, val_fraction: float) -> int:
    """Where the val text begins: nanoGPT's prepare.py keeps ``data[:int(n*0.9)]`` for train (fraction 0.1)."""
    return n_chars if val_fraction == 0 else int(n_chars * (1.0 - val_fraction))


def _read_meta(path: Path) -> dict | None:
    try:
        meta = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("version") == _CACHE_VERSION else None


def _map_tokens(path: Path, n: int) -> np.ndarray:
    return np.memmap(path, dtype="<u2", mode="r", shape=(n,)) if n else np.empty(0, dtype="<u2")


def _text_splits(digest: str, cache_dir: Path, source: str, total: int, make_stream, val_fraction: float,
                 progress: Progress | None, cancel: Cancel | None) -> tuple[dict[str, TokenArray], list[str]]:
    """Train/val token splits of a UTF-8 text as nanoGPT's prepare.py makes them, tokenizing into the cache
    if needed: the TEXT is split at character ``int(n * (1 - val_fraction))`` and each part is encoded on its
    own (``encode_ordinary``). The cache keys on the content hash and that split point."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CorpusError(f"Cannot create the token cache folder {cache_dir} ({e.strerror or e}); "
                          f"set NANOGPT_VIZ_CACHE to a writable folder.") from None
    content_meta = cache_dir / f"gpt2-{digest}.json"
    meta = _read_meta(content_meta)
    n_chars = meta.get("n_chars") if meta else None
    if not isinstance(n_chars, int) or n_chars < 0:
        try:
            n_chars = _count_chars(make_stream, cancel)
        except OSError as e:
            raise CorpusError(f"Could not read {source} ({e.strerror or e}).") from None
    cut = _char_cut(n_chars, val_fraction)
    stem = f"gpt2-{digest}-{cut}"
    train_path, val_path, meta_path = (cache_dir / f"{stem}.train.bin", cache_dir / f"{stem}.val.bin",
                                       cache_dir / f"{stem}.json")
    meta = _read_meta(meta_path)
    try:
        hit = (meta is not None and meta.get("n_chars") == n_chars and meta.get("cut") == cut
               and train_path.stat().st_size == 2 * int(meta["n_train"])
               and val_path.stat().st_size == 2 * int(meta["n_val"]))
    except (OSError, ValueError, KeyError, TypeError):
        hit = False
    if hit:
        if progress is not None:
            progress(total, total)
        n_train, n_val, n_rep = int(meta["n_train"]), int(meta["n_val"]), int(meta.get("n_replaced", 0))
        notes = [f"loaded from cache {train_path}"]
    else:
        try:
            with make_stream() as f:
                r = _tokenize_stream(f, total, train_path, progress=progress, cancel=cancel,
                                     universal_newlines=True, split_at=cut, out_val=val_path)
        except (Cancelled, CorpusError, _tok.TokenizerError):
            raise
        except OSError as e:
            raise CorpusError(f"Could not tokenize {source} into {train_path} ({e.strerror or e}).") from None
        if r.digest != digest or r.n_chars != n_chars:
            train_path.unlink(missing_ok=True)
            val_path.unlink(missing_ok=True)
            raise CorpusError(f"{source} changed while it was being read; open it again.")
        n_train, n_val, n_rep = r.n_train, r.n_val, r.n_replaced
        common = {"version": _CACHE_VERSION, "tokenizer": "gpt2", "n_chars": n_chars, "n_replaced": n_rep,
                  "source": source, "source_bytes": total}
        with _atomic_write(content_meta) as f:
            f.write(json.dumps(common, indent=1).encode("utf-8"))
        with _atomic_write(meta_path) as f:
            f.write(json.dumps({**common, "cut": cut, "n_train": n_train, "n_val": n_val},
                               indent=1).encode("utf-8"))
        notes = [f"tokenized {n_train + n_val:,} tokens, cached at {train_path}"]
    if n_rep:
        notes.append(f"{n_rep:,} of {total:,} bytes ({100 * n_rep / max(total, 1):.2g}%) are not UTF-8 and were "
                     f"replaced with U+FFFD")
    splits = {"train": TokenArray([_map_tokens(train_path, n_train)])}
    if n_val:
        splits["val"] = TokenArray([_map_tokens(val_path, n_val)])
        notes.append(f"val split: the last {n_chars - cut:,} of {n_chars:,} characters ({val_fraction:g} of the "
                     f"text, cut as nanoGPT's prepare.py cuts it), {n_val:,} tokens")
    elif val_fraction:
        notes.append("too little text for a val split")
    return splits, notes, n_rep


def _split_fraction(arr: TokenArray, val_fraction: float, notes: list[str]) -> dict[str, TokenArray]:
    n = len(arr)
    if val_fraction == 0:
        return {"train": arr}
    if n < 2:
        notes.append("too few tokens for a val split")
        return {"train": arr}
    n_train = min(max(int(n * (1.0 - val_fraction)), 1), n - 1)
    notes.append(f"val split: the last {n - n_train:,} tokens ({val_fraction:g} of the stream)")
    return {"train": arr.view(0, n_train), "val": arr.view(n_train, n)}


def _text_corpus(path: Path, val_fraction: float, cache_dir, progress, cancel,
                 extra_notes: list[str], accept_undecodable: bool = False) -> TokenCorpus:
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = _hash_file(path, cancel)
    total = path.stat().st_size
    splits, notes, n_rep = _text_splits(digest, cache, str(path), total, lambda: open(path, "rb"), val_fraction,
                                        progress, cancel)
    if n_rep > UNDECODABLE_MAX * total and not accept_undecodable:
        raise UndecodableText(
            f"{path}: {n_rep:,} of {total:,} bytes ({100 * n_rep / total:.1f}%) are not UTF-8, so this is probably "
            f"not UTF-8 text (Latin-1? UTF-16? binary data?); convert it to UTF-8, or accept the replaced bytes "
            f"(--accept-undecodable)", path=path, replaced=n_rep, total=total)
    corpus = TokenCorpus(path, path.name, "text", splits, notes=extra_notes + notes, files=[path])
    corpus.undecodable_bytes, corpus.source_bytes = n_rep, total
    return corpus


# ---------------------------------------------------------------------------------------------
# binary readers


def _read_head(path: Path, n: int = _SNIFF_BYTES) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head or len(head) < 16:
        return False
    for cut in range(4):  # allow a multibyte sequence cut by the sniff window
        try:
            s = head[:len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return False
    return all(c.isprintable() or c in "\t\n\r\f" for c in s)


def _llmc_magic(head: bytes) -> int | None:
    if len(head) >= 4:
        magic = int(np.frombuffer(head[:4], dtype="<i4")[0])
        if magic in LLMC_FORMATS:
            return magic
    return None


def _open_llmc(path: Path, head: bytes, size: int) -> np.ndarray:
    # The magics read as uint16 start with 55432 / 55713 >= 50257, so a raw GPT-2 nanoGPT .bin
    # can never start with them: a magic means llm.c, and an inconsistent header is corruption.
    magic = _llmc_magic(head)
    if len(head) < LLMC_HEADER_BYTES:
        raise CorpusError(f"{path} starts with the llm.c shard magic {magic} but is only {size} bytes, "
                          f"shorter than the {LLMC_HEADER_BYTES}-byte header.")
    header = np.frombuffer(head[:LLMC_HEADER_BYTES], dtype="<i4")
    version, count = int(header[1]), int(header[2])
    want_version, dt = LLMC_FORMATS[magic]
    if version != want_version:
        raise CorpusError(f"{path} has the llm.c magic {magic} with version {version}; supported are magic "
                          f"20240520 version 1 (uint16 tokens) and magic 20240801 version 7 (uint32 tokens).")
    expected = LLMC_HEADER_BYTES + count * dt.itemsize
    if count < 0 or expected != size:
        raise CorpusError(f"{path} is an llm.c shard whose header says {count} tokens ({expected} bytes) but "
                          f"the file has {size} bytes; it is truncated or corrupt.")
    if count == 0:
        return np.empty(0, dtype=dt)
    return np.memmap(path, dtype=dt, mode="r", offset=LLMC_HEADER_BYTES, shape=(count,))


def _open_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CorpusError(f"{path} is not a readable token .npy file ({e}); token shards must be 1-D "
                          f"uint16, int32 or uint32 arrays.") from None
    if not isinstance(arr, np.ndarray):
        raise CorpusError(f"{path} does not hold a single array; token shards must be 1-D arrays.")
    if arr.ndim != 1:
        raise CorpusError(f"{path} holds a {arr.ndim}-D array of shape {arr.shape}; token shards must be 1-D.")
    if np.dtype(arr.dtype).newbyteorder("=") not in NPY_DTYPES and arr.dtype not in NPY_DTYPES:
        raise CorpusError(f"{path} holds {arr.dtype} values; token shards must be uint16, int32 or uint32.")
    return arr


def _open_raw_bin(path: Path, size: int) -> np.ndarray:
    if size % 2:
        raise CorpusError(f"{path} has {size:,} bytes, which is not a whole number of uint16 tokens "
                          f"(a nanoGPT .bin is raw uint16 token ids with no header).")
    return np.memmap(path, dtype="<u2", mode="r")


def _classify(path: Path) -> tuple[str, bytes, int]:
    """-> (kind, head, size); kind in npy, llmc, nanogpt-bin, text. Raises CorpusError."""
    size = path.stat().st_size
    if size == 0:
        raise CorpusError(f"{path} is empty.")
    head = _read_head(path)
    suffix = path.suffix.lower()
    if head.startswith(_NPY_MAGIC):
        return "npy", head, size
    if suffix == ".npy":
        raise CorpusError(f"{path} is named .npy but is not a NumPy array file.")
    if _llmc_magic(head) is not None:
        return "llmc", head, size
    if suffix == ".bin":
        if _looks_like_text(head):
            return "text", head, size
        return "nanogpt-bin", head, size
    if b"\x00" in head:
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise CorpusError(f"{path} looks like UTF-16 text; save it as UTF-8. {_ACCEPTED}")
        raise CorpusError(f"{path} is a binary file in no format this app reads (a text file cannot "
                          f"contain NUL bytes). {_ACCEPTED}")
    return "text", head, size


def _open_token_file(path: Path, kind: str, head: bytes, size: int) -> np.ndarray:
    if kind == "npy":
        return _open_npy(path)
    if kind == "llmc":
        return _open_llmc(path, head, size)
    if kind == "nanogpt-bin":
        return _open_raw_bin(path, size)
    raise CorpusError(f"{path} is text, not a token file.")


def _open_any_token_file(path: Path) -> tuple[str, np.ndarray]:
    kind, head, size = _classify(path)
    if kind == "text":
        raise CorpusError(f"{path} looks like text, not a token file; open the text file on its own.")
    return kind, _open_token_file(path, kind, head, size)


class _SafeUnpickler(pickle.Unpickler):
    _ALLOWED = frozenset({"dict", "list", "str", "int", "float", "tuple"})

    def find_class(self, module, name):
        if module == "builtins" and name in self._ALLOWED:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a metadata file must not use")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it uses persistent ids")


def _read_meta_vocab(meta: Path, notes: list[str]) -> int | None:
    """vocab_size from a nanoGPT meta.pkl, never executing code; problems become notes."""
    try:
        if meta.stat().st_size > 16 << 20:
            notes.append(f"ignored {meta.name}: larger than 16 MiB")
            return None
        with open(meta, "rb") as f:
            obj = _SafeUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, OverflowError, MemoryError, OSError, UnicodeDecodeError) as e:
        notes.append(f"ignored {meta.name}: not a plain metadata pickle ({e})")
        return None
    v = obj.get("vocab_size") if isinstance(obj, dict) else None
    if isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 32:
        notes.append(f"vocab size {v} from {meta.name}")
        return v
    notes.append(f"ignored {meta.name}: it has no usable vocab_size")
    return None


_VAL_RE = re.compile(r"(?<![a-z])val(?:id|idation)?(?![a-z])")


def _is_val_name(name: str) -> bool:
    return bool(_VAL_RE.search(name.lower()))


def _sibling_val(path: Path) -> Path | None:
    name = path.name
    if "train" not in name:
        return None
    for alt in ("val", "valid", "validation"):
        cand = path.with_name(name.replace("train", alt))
        if cand.is_file():
            return cand
    return None


def _single_file_corpus(path: Path, kind: str, head: bytes, size: int, val_fraction: float) -> TokenCorpus:
    notes: list[str] = []
    arr = _open_token_file(path, kind, head, size)
    fmt = {"npy": "npy", "llmc": "llmc", "nanogpt-bin": "nanogpt-bin"}[kind]
    files = [path]
    vocab = _tok.VOCAB_SIZE
    if kind == "nanogpt-bin" and (path.parent / "meta.pkl").is_file():
        vocab = _read_meta_vocab(path.parent / "meta.pkl", notes) or vocab
    val_path = _sibling_val(path)
    if val_path is not None:
        _, val_arr = _open_any_token_file(val_path)
        splits = {"train": TokenArray([arr], names=[path.name])}
        if len(val_arr):
            splits["val"] = TokenArray([val_arr], names=[val_path.name])
        notes.append(f"val split from {val_path.name}")
        files.append(val_path)
    else:
        splits = _split_fraction(TokenArray([arr], names=[path.name]), val_fraction, notes)
    return TokenCorpus(path, path.name, fmt, splits, vocab_size=vocab, notes=notes, files=files)


def _dir_corpus(path: Path, val_fraction: float, cache_dir=None, progress: Progress | None = None,
                cancel: Cancel | None = None, accept_undecodable: bool = False) -> TokenCorpus:
    notes: list[str] = []
    entries = sorted((p for p in path.iterdir()
                      if p.is_file() and not p.name.startswith(".") and ".tmp-" not in p.name),
                     key=lambda p: p.name)
    vocab = _tok.VOCAB_SIZE
    if (path / "train.bin").is_file():
        train_path = path / "train.bin"
        kind, arr = _open_any_token_file(train_path)
        fmt = "nanogpt-dir" if kind == "nanogpt-bin" else ("llmc-dir" if kind == "llmc" else "npy-dir")
        if (path / "meta.pkl").is_file():
            vocab = _read_meta_vocab(path / "meta.pkl", notes) or vocab
        files = [train_path]
        if (path / "val.bin").is_file():
            _, val_arr = _open_any_token_file(path / "val.bin")
            splits = {"train": TokenArray([arr], names=["train.bin"])}
            if len(val_arr):
                splits["val"] = TokenArray([val_arr], names=["val.bin"])
            notes.append("val split from val.bin")
            files.append(path / "val.bin")
        else:
            splits = _split_fraction(TokenArray([arr], names=["train.bin"]), val_fraction, notes)
        return TokenCorpus(path, path.name, fmt, splits, vocab_size=vocab, notes=notes, files=files)

    npys = [p for p in entries if p.suffix.lower() == ".npy"]
    bins = [p for p in entries if p.suffix.lower() == ".bin"]
    if npys and bins:
        raise CorpusError(f"{path} holds both .npy and .bin token files; keep one kind of shard per folder.")
    if not npys and not bins:
        return _text_dir_corpus(path, entries, val_fraction, cache_dir, progress, cancel, accept_undecodable)
    if npys:
        fmt, shards = "npy-dir", [(p, _open_npy(p)) for p in npys]
    else:
        fmt, shards = "llmc-dir", []
        for p in bins:
            size = p.stat().st_size
            head = _read_head(p, LLMC_HEADER_BYTES)
            if _llmc_magic(head) is None:
                raise CorpusError(f"{p} does not start with an llm.c shard header (magic 20240520 or 20240801), "
                                  f"so {path} is not a folder of llm.c shards. A nanoGPT folder needs train.bin.")
            shards.append((p, _open_llmc(p, head, size)))
    val = [(p, a) for p, a in shards if _is_val_name(p.name)]
    train = [(p, a) for p, a in shards if not _is_val_name(p.name)]
    if val and not train:
        raise CorpusError(f"{path} holds only validation shards ({', '.join(p.name for p, _ in val)}); "
                          f"a corpus needs training shards too.")
    files = [p for p, _ in train] + [p for p, _ in val]
    if val:
        splits = {"train": TokenArray([a for _, a in train], names=[p.name for p, _ in train])}
        val_arr = TokenArray([a for _, a in val], names=[p.name for p, _ in val])
        if len(val_arr):
            splits["val"] = val_arr
        notes.append(f"val split from {len(val)} shard(s): {', '.join(p.name for p, _ in val)}")
    else:
        splits = _split_fraction(TokenArray([a for _, a in train], names=[p.name for p, _ in train]),
                                 val_fraction, notes)
    notes.insert(0, f"{len(train)} training shard(s)")
    return TokenCorpus(path, path.name, fmt, splits, vocab_size=vocab, notes=notes, files=files)


def text_documents(path) -> list[Path]:
    """The documents of a folder of text files, in the order they are joined: every regular file not
    hidden, sorted by name (byte order of the names, the same on every system); empty files left out.
    Raises CorpusError when the folder holds none, or holds a file that is not text."""
    path = Path(os.fspath(path)).expanduser()
    return _text_documents(path, sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                                         and ".tmp-" not in p.name), key=lambda p: p.name))


def _text_documents(path: Path, entries: list[Path]) -> list[Path]:
    if not entries:
        raise CorpusError(f"{path} contains no token files. {_ACCEPTED}")  # and no text files: it is empty
    docs = []
    for p in entries:
        if p.stat().st_size == 0:
            continue
        try:
            kind = _classify(p)[0]
        except CorpusError:
            kind = "binary"
        if kind != "text":
            raise CorpusError(f"{p.name} in the folder {path} is not a text file ({kind} data); a folder of text "
                              f"files must hold only UTF-8 text files, one document each. {_ACCEPTED}")
        docs.append(p)
    if not docs:
        raise CorpusError(f"The folder {path} holds only empty files; there is no text to tokenize.")
    return docs


def _text_dir_corpus(path: Path, entries: list[Path], val_fraction: float, cache_dir, progress, cancel,
                     accept_undecodable: bool) -> TokenCorpus:
    """A folder of text files as one stream: each document tokenized on its own (encode_ordinary) and
    followed by <|endoftext|> (50256), in sorted file-name order; cached as one nanoGPT .bin."""
    docs = _text_documents(path, entries)
    skipped = len(entries) - len(docs)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CorpusError(f"Cannot create the token cache folder {cache} ({e.strerror or e}); "
                          f"set NANOGPT_VIZ_CACHE to a writable folder.") from None
    sizes = [p.stat().st_size for p in docs]
    total = sum(sizes)
    h = hashlib.blake2b(digest_size=16)  # the folder's content: each document's name and bytes, in order
    for p, size in zip(docs, sizes):
        h.update(p.name.encode("utf-8", "surrogateescape") + b"\x00" + str(size).encode() + b"\x00")
        h.update(_hash_file(p, cancel).encode())
    digest = h.hexdigest()
    bin_path, meta_path = cache / f"gpt2-docs-{digest}.bin", cache / f"gpt2-docs-{digest}.json"
    meta = _read_meta(meta_path)
    try:
        hit = meta is not None and bin_path.stat().st_size == 2 * int(meta["n_tokens"])
    except (OSError, ValueError, KeyError, TypeError):
        hit = False
    if hit:
        if progress is not None:
            progress(total, total)
        n_tokens, doc_tokens, n_rep = int(meta["n_tokens"]), list(meta["doc_tokens"]), int(meta.get("n_replaced", 0))
        notes = [f"loaded from cache {bin_path}"]
    else:
        eot = np.array([_tok.EOT], dtype="<u2")
        doc_tokens, n_rep, done = [], 0, 0
        part = cache / f"gpt2-docs-{digest}.part-{os.getpid()}-{threading.get_ident()}.bin"
        try:
            with _atomic_write(bin_path) as out:
                for p, size in zip(docs, sizes):
                    def sub(d, t, base=done):
                        if progress is not None:
                            progress(min(base + d, total), total)
                    try:
                        with open(p, "rb") as f:
                            r = _tokenize_stream(f, size, part, progress=sub, cancel=cancel, universal_newlines=True)
                        out.write(part.read_bytes())
                    finally:
                        part.unlink(missing_ok=True)
                    out.write(eot.tobytes())
                    doc_tokens.append(r.n_train + 1)
                    n_rep += r.n_replaced
                    done += size
        except (Cancelled, CorpusError, _tok.TokenizerError):
            raise
        except OSError as e:
            raise CorpusError(f"Could not tokenize the folder {path} into {bin_path} ({e.strerror or e}).") from None
        n_tokens = sum(doc_tokens)
        with _atomic_write(meta_path) as f:
            f.write(json.dumps({"version": _CACHE_VERSION, "tokenizer": "gpt2", "source": str(path),
                                "files": [p.name for p in docs], "doc_tokens": doc_tokens, "n_tokens": n_tokens,
                                "n_replaced": n_rep, "source_bytes": total}, indent=1).encode("utf-8"))
        notes = [f"tokenized {n_tokens:,} tokens, cached at {bin_path}"]
    if n_rep > UNDECODABLE_MAX * total and not accept_undecodable:
        raise UndecodableText(
            f"{path}: {n_rep:,} of {total:,} bytes ({100 * n_rep / total:.1f}%) of its text files are not UTF-8, so "
            f"some are probably not UTF-8 text (Latin-1? UTF-16? binary data?); convert them to UTF-8, or accept "
            f"the replaced bytes (--accept-undecodable)", path=path, replaced=n_rep, total=total)
    notes.insert(0, f"{len(docs)} documents (text files in sorted name order, each followed by <|endoftext|> "
                    f"as GPT-2's data was)" + (f"; {skipped} empty file(s) left out" if skipped else ""))
    if n_rep:
        notes.append(f"{n_rep:,} of {total:,} bytes ({100 * n_rep / max(total, 1):.2g}%) are not UTF-8 and were "
                     f"replaced with U+FFFD")
    arr = TokenArray([_map_tokens(bin_path, n_tokens)], names=[bin_path.name])
    splits = _split_fraction(arr, val_fraction, notes)
    corpus = TokenCorpus(path, path.name, "text-dir", splits, notes=notes, files=list(docs))
    corpus.undecodable_bytes, corpus.source_bytes = n_rep, total
    corpus.doc_tokens = list(doc_tokens)  # tokens of each document, its <|endoftext|> included
    return corpus


def open_corpus(path, *, val_fraction: float = 0.1, cache_dir=None, progress: Progress | None = None,
                cancel: Cancel | None = None, vocab_size: int | None = None,
                accept_undecodable: bool = False) -> TokenCorpus:
    """Open any supported corpus file or folder (see the module docstring).

    ``val_fraction`` (0 <= f < 1) is used only where the data has no val file/shards: the last
    fraction of the tokens becomes the val split; for text, the last fraction of the characters
    (``text[int(n * (1 - f)):]``, nanoGPT's prepare.py), each part tokenized on its own. Text is
    tokenized once into ``cache_dir``
    (default: ``default_cache_dir()``). Token ids are checked in a bounded sample
    (``OPEN_VALIDATE_TOKENS`` per split); call ``validate(None)`` for a full scan.
    ``vocab_size`` overrides the default / meta.pkl vocabulary size. Text of which more than
    ``UNDECODABLE_MAX`` of the bytes are not UTF-8 raises ``UndecodableText`` (its ``fraction`` says how
    much) unless ``accept_undecodable``; the corpus's ``undecodable_bytes`` / ``source_bytes`` say how
    much was replaced in any text it opens (0 for token files).
    """
    try:
        f = float(val_fraction)
    except (TypeError, ValueError):
        raise CorpusError(f"The val fraction must be a number in [0, 1), not {val_fraction!r}.") from None
    if not 0.0 <= f < 1.0 or isinstance(val_fraction, bool):
        raise CorpusError(f"The val fraction must be in [0, 1) (got {val_fraction!r}).")
    if vocab_size is not None and (not isinstance(vocab_size, int) or vocab_size < 1):
        raise CorpusError(f"The vocab size must be a whole number >= 1 (got {vocab_size!r}).")
    p = Path(os.fspath(path)).expanduser()
    problem = path_problem(p)
    if problem:
        raise CorpusError(problem)
    try:
        if p.is_dir():
            corpus = _dir_corpus(p, f, cache_dir, progress, cancel, accept_undecodable)
        else:
            kind, head, size = _classify(p)
            if kind == "text":
                extra = [f"read as UTF-8 text although named {p.suffix}"] if p.suffix.lower() == ".bin" else []
                corpus = _text_corpus(p, f, cache_dir, progress, cancel, extra, accept_undecodable)
            else:
                corpus = _single_file_corpus(p, kind, head, size, f)
    except OSError as e:
        raise CorpusError(f"Cannot read {getattr(e, 'filename', None) or p}: {e.strerror or e}.") from None
    if vocab_size is not None:
        corpus.vocab_size = vocab_size
    if len(corpus.split("train")) == 0:
        raise CorpusError(f"{p} contains no training tokens.")
    corpus.validate(OPEN_VALIDATE_TOKENS)
    if any(len(a) > OPEN_VALIDATE_TOKENS for a in corpus._splits.values()):
        corpus.notes.append(f"token ids checked in the first and last {OPEN_VALIDATE_TOKENS // 2:,} "
                            f"tokens of each split only")
    return corpus


# ---------------------------------------------------------------------------------------------
# the built-in corpus

_default_lock = threading.Lock()
_default_memo: dict[str, TokenCorpus] = {}


def _default_text() -> str:
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k] for k in sorted(topics))


def default_corpus(cache_dir=None, progress: Progress | None = None) -> TokenCorpus:
    """CPython's bundled language-reference topics (pydoc_data), GPT-2 tokenized and cached.

    Always available offline (~139k tokens); 10% val split. Memoized per cache folder.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = str(cache.expanduser().absolute())
    with _default_lock:
        hit = _default_memo.get(key)
        if hit is not None and hit.path.is_file():
            if progress is not None:
                progress(1, 1)
            return hit
        data = _default_text().encode("utf-8")
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        try:
            splits, notes, _ = _text_splits(digest, cache, "pydoc_data.topics", len(data), lambda: io.BytesIO(data),
                                         0.1, progress, None)
        except OSError as e:  # pragma: no cover
            raise CorpusError(f"Could not cache the built-in corpus in {cache}: {e.strerror or e}.") from None
        bin_path = Path(splits["train"].parts[0].filename)
        notes = ["CPython's bundled documentation topics (pydoc_data.topics)"] + notes
        corpus = TokenCorpus(bin_path, DEFAULT_CORPUS_NAME, "text", splits, notes=notes, files=[bin_path])
        _default_memo[key] = corpus
        return corpus
