"""The one tokenizer: used for training, Python inference, the SavedModel graph and on-device.

It is exactly what MediaPipe's regex tokenizer does, so a .tflite file with our metadata gives the
same ids on a phone as here:

1. The text ends at its first NUL character (MediaPipe reads a C string).
2. It is split on runs of the delimiter regex; empty pieces are dropped.
3. Each piece is looked up *as is* in the vocabulary table; unknown pieces get <UNKNOWN>=2.
4. <START>=1 is prepended, the result is truncated to max_len and post-padded with <PAD>=0.

Case: MediaPipe does not lowercase, so the vocabulary is learned on lower-cased tokens and the
table lists three spellings of each word with the same id: 'free', 'Free' and 'FREE'. Mixed case
('fReE') is <UNKNOWN> everywhere, here included, so that the device and Python never disagree.

The delimiter regex uses no class shorthand (\\w, \\s): those mean ASCII in RE2 (MediaPipe,
TensorFlow string ops) and Unicode in Python's `re`. It lists ASCII control characters, ASCII
punctuation, every Unicode whitespace character and common typographic punctuation literally,
so Python `re` and RE2 split every string the same way. Letters of any script and emoji stay
inside tokens.
"""
from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

PAD, START, UNKNOWN = "<PAD>", "<START>", "<UNKNOWN>"
PAD_ID, START_ID, UNKNOWN_ID = 0, 1, 2
RESERVED = (PAD, START, UNKNOWN)

_UNICODE_SPACES = "".join(chr(c) for c in range(0x80, 0x110000) if chr(c).isspace())
_TYPOGRAPHIC = "\u2018\u2019\u201a\u201c\u201d\u201e\u2026\u2013\u2014\u00ab\u00bb\u00a1\u00bf"
# ASCII: controls and space (\x00-\x20), DEL, and the punctuation ranges !-/ :-@ [-` {-~.
DELIM_REGEX = "[\\x00-\\x20\\x7f!-/:-@\\[-`{-~" + _UNICODE_SPACES + _TYPOGRAPHIC + "]+"


def case_variants(word: str) -> list[str]:
    """The spellings of a lower-case word that map to its id: as is, Capitalised, UPPER."""
    out = []
    for v in (word, word[:1].upper() + word[1:], word.upper()):
        if v not in out:
            out.append(v)
    return out


@dataclass
class Tokenizer:
    words: list[str]  # lower-case vocabulary, id = index + 3
    max_len: int
    delim_regex: str = DELIM_REGEX

    def __post_init__(self):
        self._split = re.compile(self.delim_regex)
        self.table = self._build_table()

    @property
    def vocab_size(self) -> int:
        """Number of embedding rows: reserved ids plus words."""
        return len(self.words) + len(RESERVED)

    def _build_table(self) -> dict[str, int]:
        table = {tok: i for i, tok in enumerate(RESERVED)}
        for i, word in enumerate(self.words, start=len(RESERVED)):
            for v in case_variants(word):
                # setdefault: the more frequent word keeps a spelling two words share.
                table.setdefault(v, i)
        return table

    # --- tokenizing -------------------------------------------------------------------------
    def split(self, text: str, limit: int | None = None) -> list[str]:
        return list(itertools.islice(iter_tokens(self._split, text), limit))

    def encode_one(self, text: str) -> list[int]:
        ids = [START_ID]
        get = self.table.get
        for tok in self.split(text, self.max_len - 1):
            ids.append(get(tok, UNKNOWN_ID))
        return ids + [PAD_ID] * (self.max_len - len(ids))

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.max_len), dtype=np.int32)
        for i, text in enumerate(texts):
            out[i] = self.encode_one(text)
        return out

    # --- files ------------------------------------------------------------------------------
    def vocab_lines(self) -> list[str]:
        """MediaPipe's vocabulary file: one 'token id' line per spelling."""
        return [f"{tok} {i}" for tok, i in self.table.items()]

    def save_vocab(self, path: Path) -> None:
        Path(path).write_text("\n".join(self.vocab_lines()) + "\n", encoding="utf-8")

    def spec(self) -> dict:
        return {
            "type": "regex",
            "delim_regex": self.delim_regex,
            "max_len": self.max_len,
            "vocab_size": self.vocab_size,
            "case": "vocabulary lists lower, Capitalised and UPPER spellings of each word",
            "pad_id": PAD_ID, "start_id": START_ID, "unknown_id": UNKNOWN_ID,
            "start_token_prepended": True, "padding": "post", "truncation": "post",
        }

    @classmethod
    def load(cls, vocab_path: Path, max_len: int, delim_regex: str = DELIM_REGEX) -> "Tokenizer":
        """Read a vocabulary file written by `save_vocab`."""
        text = Path(vocab_path).read_text(encoding="utf-8")
        return cls.from_vocab_text(text, max_len, delim_regex, source=str(vocab_path))

    @classmethod
    def from_vocab_text(cls, text: str, max_len: int, delim_regex: str = DELIM_REGEX,
                        source: str = "vocabulary") -> "Tokenizer":
        """Parse 'token id' lines (the lower-case spelling of each word comes first)."""
        words: dict[int, str] = {}
        # split("\n"), not splitlines(): tokens may hold characters that splitlines breaks on.
        for number, line in enumerate(text.split("\n"), 1):
            if not line:
                continue
            tok, _, idx = line.rpartition(" ")
            if not tok or not idx.isdigit():
                from kerasrnn.errors import UserError
                raise UserError(f"{source}:{number}: expected 'token id'; the vocabulary file is damaged")
            words.setdefault(int(idx), tok)
        ordered = [words[i] for i in range(len(RESERVED), len(words))]
        return cls(ordered, max_len, delim_regex)


def iter_tokens(delim: re.Pattern, text: str) -> Iterator[str]:
    """Tokens one by one, so that a huge text costs no more memory than the tokens taken from it."""
    end = text.find("\x00")
    if end >= 0:
        text = text[:end]
    last = 0
    for match in delim.finditer(text):
        if match.start() > last:
            yield text[last:match.start()]
        last = match.end()
    if last < len(text):
        yield text[last:]


def build_vocabulary(texts: Iterable[str], vocab_size: int, delim_regex: str = DELIM_REGEX,
                     min_count: int = 1, max_tokens: int | None = None) -> list[str]:
    """Most frequent lower-case tokens of the training texts (ties broken alphabetically).

    `max_tokens`: count only the first tokens of each text, the ones the model reads.
    """
    split = re.compile(delim_regex)
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(t.lower() for t in itertools.islice(iter_tokens(split, text), max_tokens))
    return vocabulary_from_counts(counts, vocab_size, min_count)


def vocabulary_from_counts(counts: Counter, vocab_size: int, min_count: int = 1) -> list[str]:
    """The `vocab_size - 3` most frequent lower-case words of `counts` (ties broken alphabetically)."""
    counts = Counter(counts)
    for reserved in RESERVED:
        counts.pop(reserved.lower(), None)
    limit = max(vocab_size - len(RESERVED), 0)
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    # A lower-cased word that no longer lower-cases to itself ('İ'.lower()) can't be looked up: skip.
    return [w for w in ranked if w.lower() == w][:limit]
