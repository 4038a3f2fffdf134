"""The tokenizer: MediaPipe's regex-tokenizer semantics, case folding, and RE2 agreement."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerasrnn import max_len
from kerasrnn.tokenizer import DELIM_REGEX, PAD_ID, START_ID, UNKNOWN_ID, Tokenizer, build_vocabulary, case_variants

TEXTS = ["Free entry to WIN a prize", "free free FREE call now", "Call me later, ok?", "win win win"]


@pytest.fixture
def tok():
    return Tokenizer(build_vocabulary(TEXTS, 50), max_len=8)


def test_layout_start_pad_unknown(tok):
    ids = tok.encode_one("free zzzunknownzzz")
    assert ids[0] == START_ID
    assert ids[1] == tok.table["free"]
    assert ids[2] == UNKNOWN_ID
    assert ids[3:] == [PAD_ID] * 5
    assert len(ids) == tok.max_len


def test_truncates_after_start(tok):
    ids = tok.encode_one("free " * 20)
    assert len(ids) == 8 and ids[0] == START_ID and all(i == tok.table["free"] for i in ids[1:])


def test_case_variants_share_an_id(tok):
    a, b, c = tok.encode([ "free", "Free", "FREE"])
    assert (a == b).all() and (b == c).all()
    assert tok.encode_one("fReE")[1] == UNKNOWN_ID  # mixed case: unknown here and on the device


def test_vocabulary_is_lower_case_and_by_frequency():
    words = build_vocabulary(TEXTS, 3 + 3)
    assert words == ["free", "win", "call"]
    assert all(w == w.lower() for w in build_vocabulary(TEXTS, 100))


def test_vocab_file_round_trip(tmp_path, tok):
    tok.save_vocab(tmp_path / "vocab.txt")
    again = Tokenizer.load(tmp_path / "vocab.txt", tok.max_len)
    assert again.words == tok.words
    assert again.table == tok.table
    lines = (tmp_path / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert lines[:3] == ["<PAD> 0", "<START> 1", "<UNKNOWN> 2"]


def test_text_ends_at_nul(tok):
    assert tok.split("free\x00call") == ["free"]


def test_unicode_letters_stay_in_tokens_and_unicode_spaces_split(tok):
    assert tok.split("Ünïcödé 漢字 🙂") == ["Ünïcödé", "漢字", "🙂"]
    assert tok.split("a\u00a0b\u3000c\u2028d") == ["a", "b", "c", "d"]
    assert tok.split("don’t “stop”…now") == ["don", "t", "stop", "now"]
    assert tok.split("snake_case") == ["snake", "case"]


def test_case_variants_function():
    assert case_variants("free") == ["free", "Free", "FREE"]
    assert case_variants("42") == ["42"]


def test_derived_max_len_bounds():
    assert max_len.derive(["a b c"] * 10) == 8  # floor
    assert max_len.derive([" ".join(["w"] * 1000)] * 10) == 256  # cap
    assert max_len.derive([" ".join(["w"] * 19)] * 10) == 20  # 19 tokens + <START>


def _re2_split(texts):
    """Split with TensorFlow's string ops, which use RE2 (MediaPipe's engine), as the SavedModel does."""
    import tensorflow as tf

    t = tf.strings.regex_replace(tf.constant(texts), "(?s)\\x00.*", "")
    t = tf.strings.regex_replace(t, DELIM_REGEX, " ")
    parts = tf.strings.split(t, sep=" ")
    return [[p.decode("utf-8") for p in row if p] for row in parts.numpy().tolist()]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=20))
def test_python_split_equals_re2_split(texts):
    tok = Tokenizer([], 8)
    texts = [t.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for t in texts]
    assert [tok.split(t) for t in texts] == _re2_split(texts)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_string_gives_valid_ids(text):
    tok = Tokenizer(build_vocabulary(TEXTS, 50), max_len=16)
    ids = np.array(tok.encode_one(text))
    assert ids.shape == (16,)
    assert ids.min() >= 0 and ids.max() < tok.vocab_size
    assert ids[0] == START_ID
