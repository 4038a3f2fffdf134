"""Corpora larger than memory: `--data 'shards/*.csv.gz'` (or `--stream` on one file).

Nothing holds the corpus: every pass reads the shards a line at a time (kerasrnn.data parses them,
with the same errors as in memory).

- Split: each text goes to test / validation / training by a hash of its bytes, so every worker
  and every run agrees without shuffling the corpus, and a text repeated in the data can never be
  in training and in the test split at once. The fractions are --test-split and --val-split.
- Vocabulary: one streaming pass counts the training tokens (the first max_len-1 of each text, or
  255 when max_len is derived) in a counter capped at `count_cap` words: past the cap, the rarest
  half is dropped, so memory stays bounded and the top-k is exact unless the corpus has more
  distinct words than the cap. max_len (when not given) is the 95th percentile of a histogram of
  token counts, as in memory.
- Batches: shards are read in sorted order, examples shuffled through a seeded buffer of
  `SHUFFLE_BUFFER` per epoch (seed from (seed, epoch): a resumed run sees the same batches).
"""
from __future__ import annotations

import glob
import hashlib
import itertools
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasrnn.data import checked_label, decoded_lines, default_dataset_path, label_order, read_rows
from kerasrnn.errors import UserError
from kerasrnn.tokenizer import DELIM_REGEX, Tokenizer, iter_tokens, vocabulary_from_counts

SHUFFLE_BUFFER = 10_000
SPLITS = ("train", "validation", "test")


def is_glob(path: str | None) -> bool:
    return path is not None and any(c in str(path) for c in "*?[")


def shard_files(pattern: str | None) -> list[Path]:
    if pattern is None:
        return [default_dataset_path()]
    if not is_glob(pattern):
        path = Path(pattern)
        if not path.exists():
            raise UserError(f"{pattern}: no such file; check the --data path")
        if path.is_dir():
            raise UserError(f"{pattern}: streaming reads CSV/TSV/JSONL files, not a folder of class folders; "
                            "drop --stream, or pass a pattern such as 'shards/*.csv.gz'")
        return [path]
    files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not files:
        raise UserError(f"{pattern}: no file matches this pattern; check it (and quote it, so that the shell "
                        "does not expand it)")
    return files


def split_of(text: str, val_split: float, test_split: float) -> str:
    """'test', 'validation' or 'train', from a hash of the text: the same on every machine and run."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    return "test" if u < test_split else "validation" if u < test_split + val_split else "train"


class BoundedCounter:
    """Token counts in at most `cap` entries: past the cap the rarer half is dropped (ties by word)."""

    def __init__(self, cap: int):
        self.cap, self.counts, self.pruned = cap, Counter(), 0

    def update(self, tokens) -> None:
        self.counts.update(tokens)
        if len(self.counts) > self.cap:
            keep = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[: self.cap // 2]
            self.pruned += len(self.counts) - len(keep)
            self.counts = Counter(dict(keep))


@dataclass
class Corpus:
    """The shards of --data (and --test-data), read a row at a time, split by hash."""

    files: list[Path]
    test_files: list[Path] | None = None
    text_column: str = "text"
    label_column: str = "label"
    val_split: float = 0.1
    test_split: float = 0.2
    sizes: dict = field(default_factory=dict)
    skipped_blank: int = 0

    @property
    def source(self) -> str:
        return str(self.files[0]) if len(self.files) == 1 else f"{len(self.files)} shards: {self.files[0]} ..."

    def rows(self, split: str):
        """(where, text, label) of one split, in file order; blank texts skipped."""
        separate_test = self.test_files is not None
        files = self.test_files if separate_test and split == "test" else self.files
        test_fraction = 0.0 if separate_test else self.test_split
        for path in files:
            for line, text, label in read_rows(path, decoded_lines(path), self.text_column, self.label_column):
                where = f"{path}:{line}"
                label = checked_label(label, where)
                if not text.strip():
                    continue
                if not (separate_test and split == "test") and split_of(text, self.val_split, test_fraction) != split:
                    continue
                yield where, text, label

    def scan(self, vocab_size: int, max_len: int | None, count_cap: int, delim_regex: str = DELIM_REGEX) -> dict:
        """One pass over the data (and --test-data): labels, split sizes, max_len, vocabulary."""
        split = re.compile(delim_regex)
        labels, train_labels = set(), Counter()
        sizes = {s: 0 for s in SPLITS}
        lengths = np.zeros(257, np.int64)
        counter = BoundedCounter(count_cap)
        per_text = (max_len or 256) - 1  # the tokens the model reads (255 while max_len is unknown)
        blank = 0
        test_fraction = 0.0 if self.test_files is not None else self.test_split
        for path in self.files:
            for line, text, label in read_rows(path, decoded_lines(path), self.text_column, self.label_column):
                label = checked_label(label, f"{path}:{line}")
                if not text.strip():
                    blank += 1
                    continue
                part = split_of(text, self.val_split, test_fraction)
                sizes[part] += 1
                labels.add(label)
                if part == "train":
                    train_labels[label] += 1
                    tokens = [t.lower() for t in itertools.islice(iter_tokens(split, text), per_text)]
                    lengths[min(len(tokens), 255) + 1] += 1
                    counter.update(tokens)
        if sizes["train"] == 0:
            what = f" ({blank} blank texts skipped)" if blank else ""
            raise UserError(f"{self.source}: no training texts{what}; check --text-column and the split fractions")
        if len(labels) < 2:
            raise UserError(f"{self.source}: only one class ({next(iter(labels))!r}); a classifier needs at least two")
        ordered = label_order(list(labels))
        if self.test_files is not None:  # read now: an unknown test label should stop us before training
            index = {lab: i for i, lab in enumerate(ordered)}
            for where, _, label in self.rows("test"):
                _label_id(index, label, where)
                sizes["test"] += 1
        if max_len is None:
            cumulative = np.cumsum(lengths) / lengths.sum()
            max_len = int(min(256, max(8, int(np.searchsorted(cumulative, 0.95)))))
        self.sizes, self.skipped_blank = sizes, blank
        words = vocabulary_from_counts(counter.counts, vocab_size)
        return {"labels": ordered, "label_counts": dict(train_labels), "max_len": max_len,
                "words": words, "words_pruned": counter.pruned}

    def batches(self, split: str, tokenizer: Tokenizer, label_index: dict, batch_size: int,
                seed: int | None = None, lengths: list[int] | None = None, weights: np.ndarray | None = None):
        """(ids, labels[, weights]) batches of one pass over a split; shuffled through a buffer if seeded."""
        rows = ((where, text, label) for where, text, label in self.rows(split))
        if seed is not None:
            rows = _buffer_shuffle(rows, SHUFFLE_BUFFER, random.Random(seed))
        while True:
            chunk = list(itertools.islice(rows, batch_size))
            if not chunk:
                return
            ids = tokenizer.encode(text for _, text, _ in chunk)
            y = np.array([_label_id(label_index, label, where) for where, _, label in chunk], np.int32)
            if lengths and len(chunk) == batch_size:  # cut to the texts' length (kerasrnn.train.trim_lengths);
                # a short last batch keeps max_len, so that it adds one shape, not one per bucket
                ids = ids[:, : next((n for n in lengths if n >= int((ids != 0).sum(1).max())), lengths[-1])]
            yield (ids, y) if weights is None else (ids, y, weights[y].astype(np.float32))

    def describe(self) -> dict:
        return {"files": [str(f) for f in self.files], "test_files": [str(f) for f in self.test_files or []],
                "split": "hash of each text (blake2b)", "sizes": self.sizes}


def _label_id(label_index: dict, label: str, where: str) -> int:
    try:
        return label_index[label]
    except KeyError:
        known = list(label_index)
        raise UserError(f"{where}: label {label!r} was never seen in training (known: {', '.join(known[:10])}"
                        f"{', ...' if len(known) > 10 else ''}); remove or relabel it") from None


def _buffer_shuffle(items, size: int, rng: random.Random):
    """Shuffle a stream through a buffer of `size` items: memory stays bounded, order is seeded."""
    buffer = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        k = rng.randrange(size)
        yield buffer[k]
        buffer[k] = item
    rng.shuffle(buffer)
    yield from buffer


def write_test_split(path: Path, rows) -> None:
    """The test split as JSONL, written as it streams past (temp name, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for text, label in rows:
            f.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
    tmp.replace(path)

