"""Token corpora in every format, their failure modes, the text cache and TokenArray."""
from __future__ import annotations

import io
import os
import pickle
import random
import resource
import time

import numpy as np
import pytest

from nanogpt_viz.data import corpus as C
from nanogpt_viz.data import tokenizer as T
from nanogpt_viz.data.corpus import CorpusError, TokenArray, open_corpus


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NANOGPT_VIZ_CACHE", str(cache))
    return cache


def toks(n, seed=0, hi=50257, dtype=np.uint16):
    return np.random.default_rng(seed).integers(0, hi, size=n).astype(dtype)


def leftovers(folder):
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name]


# -- nanoGPT ---------------------------------------------------------------------------------------

def test_nanogpt_bin_with_val_and_meta(tmp_path):
    d = tmp_path / "shakespeare"
    d.mkdir()
    train, val = toks(1000, 1, hi=65), toks(100, 2, hi=65)
    C.write_nanogpt_bin(d / "train.bin", train)
    C.write_nanogpt_bin(d / "val.bin", val)
    with open(d / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": 65, "itos": {i: chr(65 + i) for i in range(65)},
                     "stoi": {chr(65 + i): i for i in range(65)}}, f)
    c = open_corpus(d / "train.bin")
    assert c.fmt == "nanogpt-bin" and c.name == "train.bin"
    assert c.vocab_size == 65
    assert np.array_equal(c.train[:], train) and np.array_equal(c.val[:], val)
    assert len(c) == 1000
    assert any("val.bin" in n for n in c.notes)
    assert c.train.dtype == np.uint16
    assert not leftovers(tmp_path)

    c2 = open_corpus(d)
    assert c2.fmt == "nanogpt-dir" and c2.vocab_size == 65
    assert np.array_equal(c2.val[:], val)


def test_nanogpt_bin_without_val_splits_by_fraction(tmp_path):
    data = toks(1000)
    C.write_nanogpt_bin(tmp_path / "data.bin", data)
    c = open_corpus(tmp_path / "data.bin", val_fraction=0.25)
    assert len(c.train) == 750 and len(c.val) == 250
    assert np.array_equal(np.concatenate([c.train[:], c.val[:]]), data)
    c0 = open_corpus(tmp_path / "data.bin", val_fraction=0.0)
    assert not c0.has_split("val") and len(c0) == 1000
    with pytest.raises(CorpusError, match="no val split"):
        c0.split("val")
    with pytest.raises(CorpusError):
        c0.split("test")


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2, "x", None])
def test_bad_val_fraction(tmp_path, bad):
    C.write_nanogpt_bin(tmp_path / "data.bin", toks(10))
    with pytest.raises(CorpusError, match="val fraction"):
        open_corpus(tmp_path / "data.bin", val_fraction=bad)


def test_malicious_meta_pkl_is_not_executed(tmp_path):
    d = tmp_path / "evil"
    d.mkdir()
    C.write_nanogpt_bin(d / "train.bin", toks(100))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    with open(d / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": 100, "x": Evil()}, f)
    c = open_corpus(d)
    assert not marker.exists()
    assert c.vocab_size == 50257
    assert any("meta.pkl" in n and "ignored" in n for n in c.notes)


def test_odd_size_bin(tmp_path):
    p = tmp_path / "odd.bin"
    p.write_bytes(b"\x01\x02\x03")
    with pytest.raises(CorpusError, match="not a whole number of uint16 tokens"):
        open_corpus(p)


def test_ids_above_vocab(tmp_path):
    data = toks(500)
    data[321] = 60000
    C.write_nanogpt_bin(tmp_path / "x.bin", data)
    with pytest.raises(CorpusError, match="token id 60000 at position 321 is >= vocab size 50257"):
        open_corpus(tmp_path / "x.bin", val_fraction=0)
    c = open_corpus(tmp_path / "x.bin", val_fraction=0, vocab_size=65536)
    assert c.validate() == 500


def test_validate_samples_bounded(tmp_path):
    data = np.zeros(1000, np.uint16)
    data[500] = 60000
    C.write_nanogpt_bin(tmp_path / "x.bin", data)
    c = C._single_file_corpus(tmp_path / "x.bin", "nanogpt-bin", b"", 2000, 0.0)
    assert c.validate(max_tokens=100) == 100  # only first/last 50 looked at
    with pytest.raises(CorpusError, match="position 500"):
        c.validate(max_tokens=None)


# -- llm.c -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version,dtype", [(1, np.uint16), (7, np.uint32)])
def test_llmc_shard(tmp_path, version, dtype):
    data = toks(777, dtype=dtype)
    p = tmp_path / "shard.bin"
    C.write_llmc_shard(p, data, version=version)
    assert p.stat().st_size == 1024 + 777 * np.dtype(dtype).itemsize
    c = open_corpus(p, val_fraction=0.1)
    assert c.fmt == "llmc"
    assert c.train.dtype == dtype
    assert np.array_equal(np.concatenate([c.train[:], c.val[:]]), data)


def test_llmc_dir_with_train_and_val(tmp_path):
    d = tmp_path / "fineweb10B"
    d.mkdir()
    shards = [toks(300, i) for i in range(3)]
    C.write_llmc_shard(d / "fineweb_val_000000.bin", shards[0])
    C.write_llmc_shard(d / "fineweb_train_000001.bin", shards[1])
    C.write_llmc_shard(d / "fineweb_train_000002.bin", shards[2])
    c = open_corpus(d)
    assert c.fmt == "llmc-dir"
    assert np.array_equal(c.val[:], shards[0])
    assert np.array_equal(c.train[:], np.concatenate(shards[1:]))
    assert c.train.n_parts == 2


def test_llmc_single_file_finds_val_sibling(tmp_path):
    C.write_llmc_shard(tmp_path / "tiny_shakespeare_train.bin", toks(200, 1))
    C.write_llmc_shard(tmp_path / "tiny_shakespeare_val.bin", toks(50, 2))
    c = open_corpus(tmp_path / "tiny_shakespeare_train.bin")
    assert len(c.train) == 200 and len(c.val) == 50


def test_llmc_header_count_mismatch(tmp_path):
    p = tmp_path / "shard.bin"
    C.write_llmc_shard(p, toks(100))
    with open(p, "ab") as f:
        f.write(b"\x00\x00")
    with pytest.raises(CorpusError, match="header says 100 tokens"):
        open_corpus(p)


def test_llmc_bad_version(tmp_path):
    p = tmp_path / "shard.bin"
    C.write_llmc_shard(p, toks(100))
    raw = bytearray(p.read_bytes())
    raw[4:8] = np.array([3], "<i4").tobytes()
    p.write_bytes(bytes(raw))
    with pytest.raises(CorpusError, match="version 3"):
        open_corpus(p)


def test_llmc_dir_bad_magic(tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    C.write_llmc_shard(d / "a_train_000.bin", toks(100))
    C.write_nanogpt_bin(d / "a_train_001.bin", toks(100))
    with pytest.raises(CorpusError, match="llm.c shard header"):
        open_corpus(d)


# -- npy ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.uint32])
def test_npy_single(tmp_path, dtype):
    data = toks(400, dtype=dtype)
    C.write_npy_shard(tmp_path / "edu_fineweb.npy", data, dtype=dtype)
    c = open_corpus(tmp_path / "edu_fineweb.npy", val_fraction=0.5)
    assert c.fmt == "npy" and c.train.dtype == dtype
    assert np.array_equal(np.concatenate([c.train[:], c.val[:]]), data)


def test_npy_dir(tmp_path):
    d = tmp_path / "edu_fineweb10B"
    d.mkdir()
    parts = [toks(150, i, dtype=np.uint16) for i in range(4)]
    C.write_npy_shard(d / "edufineweb_val_000000.npy", parts[0])
    for i in (1, 2, 3):
        C.write_npy_shard(d / f"edufineweb_train_{i:06d}.npy", parts[i])
    c = open_corpus(d)
    assert c.fmt == "npy-dir"
    assert np.array_equal(c.train[:], np.concatenate(parts[1:]))
    assert np.array_equal(c.val[:], parts[0])


def test_npy_dir_without_val_splits_stream(tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    parts = [toks(100, i) for i in range(3)]
    for i, p in enumerate(parts):
        C.write_npy_shard(d / f"shard_{i:02d}.npy", p)
    c = open_corpus(d, val_fraction=0.2)
    assert np.array_equal(np.concatenate([c.train[:], c.val[:]]), np.concatenate(parts))
    assert len(c.val) == 60


def test_npy_bad_dtype_and_ndim(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros(10, np.float32))
    with pytest.raises(CorpusError, match="float32"):
        open_corpus(tmp_path / "f.npy")
    np.save(tmp_path / "m.npy", np.zeros((4, 4), np.uint16))
    with pytest.raises(CorpusError, match="2-D"):
        open_corpus(tmp_path / "m.npy")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CorpusError):
        open_corpus(tmp_path / "o.npy")


def test_npy_negative_ids(tmp_path):
    C.write_npy_shard(tmp_path / "n.npy", np.array([1, 2, 3], np.int32), dtype=np.int32)
    np.save(tmp_path / "n.npy", np.array([1, -5, 3], np.int32))
    with pytest.raises(CorpusError, match="negative"):
        open_corpus(tmp_path / "n.npy", val_fraction=0)


# -- bad inputs ---------------------------------------------------------------------------------------

def test_missing_and_empty(tmp_path):
    with pytest.raises(CorpusError, match="no file or folder"):
        open_corpus(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(CorpusError, match="empty"):
        open_corpus(tmp_path / "empty.txt")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(CorpusError, match="no token files"):
        open_corpus(tmp_path / "emptydir")


def test_binary_file_refused(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_bytes(b"this looks like text\x00\x01\x02 but has NUL bytes")
    with pytest.raises(CorpusError, match="binary.*nanoGPT .bin"):
        open_corpus(p)


def test_corpus_error_is_value_error():
    assert issubclass(CorpusError, ValueError)
    assert not issubclass(C.Cancelled, CorpusError)


# -- text ---------------------------------------------------------------------------------------------

def test_text_file_cached(tmp_path, tmp_cache, monkeypatch):
    text = "Hello world. " * 200 + "café 😀 中文\n"
    p = tmp_path / "input.txt"
    p.write_text(text, encoding="utf-8")
    calls = []
    c = open_corpus(p, progress=lambda d, t: calls.append((d, t)))
    assert c.fmt == "text" and c.name == "input.txt"
    cut = int(len(text) * 0.9)  # nanoGPT's prepare.py: the text is split, then each part encoded
    assert np.array_equal(c.train[:], T.encode(text[:cut])) and np.array_equal(c.val[:], T.encode(text[cut:]))
    assert calls and calls[-1] == (p.stat().st_size, p.stat().st_size)
    done = [d for d, _ in calls]
    assert done == sorted(set(done))  # strictly increasing
    assert any("cached at" in n for n in c.notes)
    assert list(tmp_cache.glob("*.bin"))

    def boom(*a, **k):
        raise AssertionError("tokenized again")
    monkeypatch.setattr(C, "_tokenize_stream", boom)
    c2 = open_corpus(p)
    assert any("loaded from cache" in n for n in c2.notes)
    assert np.array_equal(c2.train[:], c.train[:])
    # same content under another name shares the cache
    q = tmp_path / "copy.txt"
    q.write_bytes(p.read_bytes())
    assert len(open_corpus(q)) == len(c)


def test_text_split_by_characters_as_nanogpt_prepare(tmp_path, tmp_cache, monkeypatch):
    # nanoGPT's data/shakespeare/prepare.py: train = data[:int(n*0.9)], val = the rest, each encoded on its own
    text = "Tokenization splits words. " * 7 + "Antidisestablishmentarianism\r\nend\r"
    as_read = text.replace("\r\n", "\n").replace("\r", "\n")  # open(path, 'r') reads newlines so
    cut = int(len(as_read) * 0.9)
    assert as_read[cut - 1].isalpha() and as_read[cut].isalpha()  # the cut falls inside a word
    want_train, want_val = T.encode(as_read[:cut]), T.encode(as_read[cut:])
    assert want_train + want_val != T.encode(as_read)  # so a token split could not give these
    p = tmp_path / "input.txt"
    p.write_bytes(text.encode("utf-8"))
    c = open_corpus(p)
    assert c.train[:].tolist() == want_train and c.val[:].tolist() == want_val
    assert any("characters" in n for n in c.notes)
    # --val-fraction keeps its meaning (a fraction of the characters), and each split point is cached
    c2 = open_corpus(p, val_fraction=0.25)
    cut2 = int(len(as_read) * 0.75)
    assert c2.train[:].tolist() == T.encode(as_read[:cut2]) and c2.val[:].tolist() == T.encode(as_read[cut2:])
    c0 = open_corpus(p, val_fraction=0)
    assert c0.train[:].tolist() == T.encode(as_read) and not c0.has_split("val")

    def boom(*a, **k):
        raise AssertionError("tokenized again")
    monkeypatch.setattr(C, "_tokenize_stream", boom)
    for f, tr in ((0.1, want_train), (0.25, c2.train[:].tolist()), (0, c0.train[:].tolist())):
        again = open_corpus(p, val_fraction=f)
        assert again.train[:].tolist() == tr and any("loaded from cache" in n for n in again.notes)


@pytest.mark.parametrize("chunk_chars", [1, 2, 5])
def test_split_stream_equals_separate_encodes(tmp_path, chunk_chars):
    # chunk cuts near the split point must be safe for the part's own text: "x\\n\\n" | "y" split at 3
    # is encode("x\\n\\n") = [87, 628], never "x\\n" + "\\n" (a cut that is safe only in the whole text)
    text = "x\n\ny a  b   c\n\n d" + "\n".join(TRICKY)
    for split in list(range(0, 16)) + [len(text) // 2, len(text) - 1, len(text)]:
        with io.BytesIO(text.encode("utf-8")) as f:
            r = C._tokenize_stream(f, len(text), tmp_path / "a.bin", progress=None, cancel=None,
                                   chunk_chars=chunk_chars, read_bytes=7, num_threads=2, split_at=split,
                                   out_val=tmp_path / "b.bin")
        assert np.fromfile(tmp_path / "a.bin", dtype="<u2").tolist() == T.encode(text[:split]), split
        assert np.fromfile(tmp_path / "b.bin", dtype="<u2").tolist() == T.encode(text[split:]), split
        assert (r.n_train, r.n_val, r.n_chars) == (len(T.encode(text[:split])), len(T.encode(text[split:])), len(text))


def test_progress_is_granular(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("words and more words\n" * 5000)
    calls = []
    C.tokenize_text_file(p, tmp_path / "t.bin", progress=lambda d, t: calls.append(d), chunk_chars=1000)
    assert len(calls) > 50 and calls == sorted(set(calls)) and calls[-1] == p.stat().st_size


def test_text_invalid_utf8_counted(tmp_path):
    raw = b"good \xff\xfe bytes \xe2\x82 cut euro \xe2\x82\xac end"
    p = tmp_path / "bad.txt"
    p.write_bytes(raw)
    with pytest.raises(C.UndecodableText) as info:  # 12% is more than a few percent: refused unless accepted
        open_corpus(p, val_fraction=0)
    assert (info.value.replaced, info.value.total) == (4, 33)
    c = open_corpus(p, val_fraction=0, accept_undecodable=True)
    assert any("4 of 33 bytes (12%) are not UTF-8" in n for n in c.notes)  # \xff, \xfe, \xe2\x82
    assert (c.undecodable_bytes, c.source_bytes) == (4, 33)
    assert np.array_equal(c.train[:], T.encode(raw.decode("utf-8", errors="replace")))
    n, rep = C.tokenize_text_file(p, tmp_path / "out.bin", read_bytes=3, chunk_chars=2)
    assert rep == 4  # same count when the stream is cut inside multi-byte sequences
    assert n == len(c.train)


def test_cancel_leaves_nothing(tmp_path, tmp_cache):
    p = tmp_path / "big.txt"
    p.write_text("some words here and there\n" * 20000)
    state = {"n": 0}

    def cancel():
        state["n"] += 1
        return state["n"] > 3
    with pytest.raises(C.Cancelled):
        C.tokenize_text_file(p, tmp_path / "out.bin", cancel=cancel, chunk_chars=1000, read_bytes=4096)
    assert not (tmp_path / "out.bin").exists()
    assert not leftovers(tmp_path)
    state["n"] = 0
    with pytest.raises(C.Cancelled):
        open_corpus(p, cancel=cancel)
    assert not list(tmp_cache.glob("*.bin")) and not list(tmp_cache.glob("*.json"))
    assert not leftovers(tmp_path)
    c = open_corpus(p)  # not cancelled: works, nothing stale got in the way
    assert len(c) + len(c.val) == len(T.encode(p.read_text()))


TRICKY = [
    "a  b   c    d\n\ne\n\n\nf \n g\t\th \t i",
    "Windows\r\nlines\r\n\r\nend\r\n",
    "unicode\u00a0spaces\u2003here\u3000and\u2028there\u202f!",
    "emoji 😀😀 👨‍👩‍👧 flags 🇫🇷 ok",
    "numbers 12345 678 9.0 1,000,000 and 3rd 4th",
    "contractions don't won't I'm we've they're she'll he'd 'quoted' ''",
    "  leading and trailing   ",
    "\n\n\nnewlines first",
    "中文没有空格但是有标点。\n\n第二段\n第三段。",
    "mixed\x0bvertical\x0cform\x1cfs\x85nel",
    "<|endoftext|> special text <|endoftext|>",
    "tabs\tafter\t\tword \t\n\t",
]


def _chunked(text: str, chunk_chars: int, read_bytes: int, tmp_path) -> np.ndarray:
    src = tmp_path / "t.txt"
    src.write_bytes(text.encode("utf-8"))
    out = tmp_path / "t.bin"
    n, _ = C.tokenize_text_file(src, out, chunk_chars=chunk_chars, read_bytes=read_bytes, num_threads=2)
    arr = np.fromfile(out, dtype="<u2")
    assert len(arr) == n
    return arr


@pytest.mark.parametrize("chunk_chars", [1, 2, 3, 5, 8, 64])
def test_chunked_equals_whole_tricky(tmp_path, chunk_chars):
    text = "\n".join(TRICKY * 3)
    got = _chunked(text, chunk_chars, 7, tmp_path)
    assert got.tolist() == T.encode(text)


def test_chunked_equals_whole_fuzz(tmp_path):
    rng = random.Random(1234)
    alphabet = list("ab Z9'.,-") + [" ", " ", "  ", "\n", "\n\n", "\r\n", "\t", "\u00a0", "\u3000",
                                     "é", "中", "😀", "'s", "'ll", "12", "\x0b", "\x1c", "\u2028"]
    for _ in range(150):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 120)))
        got = _chunked(text, rng.randint(1, 6), rng.randint(1, 9), tmp_path)
        assert got.tolist() == T.encode(text), repr(text)


# -- TokenArray ---------------------------------------------------------------------------------------

@pytest.fixture
def sharded():
    parts = [np.arange(0, 10, dtype=np.uint16), np.arange(10, 13, dtype=np.uint16),
             np.arange(13, 30, dtype=np.uint16)]
    return TokenArray(parts), np.concatenate(parts)


def test_token_array_slicing(sharded):
    ta, ref = sharded
    assert len(ta) == 30 and ta.n_parts == 3
    for a in range(0, 31):
        for b in range(a, 31):
            assert np.array_equal(ta[a:b], ref[a:b])
    assert ta[5] == 5 and ta[-1] == 29 and isinstance(ta[12], int)
    assert np.array_equal(ta[::3], ref[::3])
    assert np.array_equal(ta[-5:], ref[-5:])
    assert np.array_equal(ta[np.array([0, 12, 29, 9])], ref[[0, 12, 29, 9]])
    with pytest.raises(IndexError):
        ta[30]
    v = ta.view(8, 15)
    assert np.array_equal(v[:], ref[8:15]) and len(v) == 7


def test_token_array_gather(sharded):
    ta, ref = sharded
    starts = np.array([0, 7, 8, 9, 10, 12, 20, 22, 1, 9])
    for width in (1, 2, 5, 8):
        got = ta.gather(starts, width)
        want = np.stack([ref[s:s + width] for s in starts]).astype(np.int64)
        assert got.dtype == np.int64 and np.array_equal(got, want)
    with pytest.raises(IndexError):
        ta.gather([25], 6)
    assert ta.gather([], 4).shape == (0, 4)


def test_single_shard_gather_is_readonly_memmap(tmp_path):
    data = toks(5000)
    C.write_nanogpt_bin(tmp_path / "d.bin", data)
    c = open_corpus(tmp_path / "d.bin", val_fraction=0)
    starts = np.random.default_rng(0).integers(0, 5000 - 64, size=32)
    got = c.train.gather(starts, 64)
    assert np.array_equal(got, np.stack([data[s:s + 64] for s in starts]))
    view = c.train[10:20]
    assert not view.flags.writeable


# -- writers, cache dir, default corpus -----------------------------------------------------------------

def test_writers_atomic_and_validated(tmp_path):
    with pytest.raises(CorpusError):
        C.write_nanogpt_bin(tmp_path / "x.bin", [70000])
    assert not (tmp_path / "x.bin").exists() and not leftovers(tmp_path)
    with pytest.raises(ValueError):
        C.write_llmc_shard(tmp_path / "y.bin", [1], version=2)
    with pytest.raises(ValueError):
        C.write_npy_shard(tmp_path / "z.npy", [1], dtype=np.float32)
    C.write_npy_shard(tmp_path / "z.npy", [1, 2, 3], dtype=np.int32)
    assert np.load(tmp_path / "z.npy").dtype == np.int32


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("NANOGPT_VIZ_CACHE", str(tmp_path / "a"))
    assert C.default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("NANOGPT_VIZ_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.default_cache_dir() == tmp_path / "xdg" / "nanogpt-viz"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert C.default_cache_dir().parts[-2:] == (".cache", "nanogpt-viz")


def test_default_corpus(tmp_cache):
    c = C.default_corpus()
    assert c.name == "Python language reference (built-in)"
    assert 100_000 < c.total_tokens < 200_000
    assert c.has_split("val") and len(c.val) > 0
    assert "def" in T.decode(c.train[:5000])
    assert C.default_corpus() is c
    C._default_memo.clear()
    c2 = C.default_corpus()
    assert any("loaded from cache" in n for n in c2.notes)
    assert np.array_equal(c2.train[:100], c.train[:100])


def test_sparse_20gb_bin_opens_instantly(tmp_path):
    p = tmp_path / "huge.bin"
    try:
        with open(p, "wb") as f:
            f.truncate(2 * 10**10)  # 10^10 uint16 tokens, sparse
    except OSError:
        pytest.skip("filesystem cannot make a 20 GB sparse file")
    try:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        c = open_corpus(p)
        elapsed = time.perf_counter() - t0
        grew_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        assert len(c) + len(c.val) == 10**10
        assert elapsed < 5
        assert grew_kib < 200 * 1024
        assert c.train.gather(np.array([0, 9 * 10**9 - 100]), 16).shape == (2, 16)
        assert any("checked in the first and last" in n for n in c.notes)
        del c
    finally:
        os.remove(p)


def test_content_beats_extension(tmp_path):
    # text saved as .bin is read as text (with a note), an llm.c shard named .dat is still llm.c
    p = tmp_path / "input.bin"
    p.write_text("Plain prose that someone saved with a .bin name.\n" * 20)
    c = open_corpus(p, val_fraction=0)
    assert c.fmt == "text" and any("text although named .bin" in n for n in c.notes)
    C.write_llmc_shard(tmp_path / "shard.dat", toks(64))
    assert open_corpus(tmp_path / "shard.dat").fmt == "llmc"
    q = tmp_path / "utf16.txt"
    q.write_bytes("hello".encode("utf-16"))
    with pytest.raises(CorpusError, match="UTF-16"):
        open_corpus(q)
