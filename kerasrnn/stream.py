"""Corpora larger than memory: `--data 'shards/*.csv.gz'` (or `--stream` on one file).

Nothing holds the corpus: every pass reads the shards a line at a time (kerasrnn.data parses them,
with the same errors as in memory).

- Split: each text goes to test / validation / training by a hash of its bytes, so every worker
  and every run agrees without shuffling the corpus, and a text repeated in the data can never be
  in training and in the test split at once. The fractions are --test-split and --val-split.
- Vocabulary: one streaming pass counts the training tokens (the first max_len-1 of each text, or
  255 when max_len is derived) in a counter capped at `count_cap` words: past the cap, the rarest
  half is dropped, so memory stays bounded and the top-k is exact unless the corpus has more
  distinct words than the cap. max_len (when not given) comes from a histogram of the training
  token counts by kerasrnn.max_len, the rule of the in-memory path too.
- Batches: shards are read in sorted order, examples shuffled through a seeded buffer of
  `SHUFFLE_BUFFER` per epoch (seed from (seed, epoch): a resumed run sees the same batches).
- Data-parallel workers (`worker_part`): each reads its own shards, or its own rows when there are
  fewer shards than workers, and feeds a fixed number of batches per epoch (`batches(steps=...)`).
"""
from __future__ import annotations

import glob
import hashlib
import itertools
import random
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kerasrnn import max_len as max_len_rule
from kerasrnn.batching import trimmed_width
from kerasrnn.data import checked_label, decoded_lines, default_dataset_path, label_order, read_rows, unseen_label
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
    stride: tuple[int, int] = (0, 1)  # (k, n): read only row k of every n of --data (worker_part's fallback)
    split_counts: dict = field(default_factory=dict)  # str(file) -> texts per split (scan, or a --vocab file)
    rows_read: Counter = field(default_factory=Counter)  # rows yielded by rows(), per split

    @property
    def source(self) -> str:
        return str(self.files[0]) if len(self.files) == 1 else f"{len(self.files)} shards: {self.files[0]} ..."

    def _read(self, files: list[Path]):
        """(where, text, label) of every row of `files`, label checked, blank texts included."""
        for path in files:
            for line, text, label in read_rows(path, decoded_lines(path), self.text_column, self.label_column):
                where = f"{path}:{line}"
                yield where, text, checked_label(label, where)

    def _split(self, text: str) -> str:
        return split_of(text, self.val_split, 0.0 if self.test_files is not None else self.test_split)

    def rows(self, split: str, first_file: int = 0):
        """(where, text, label) of one split, in file order from `first_file` on (then the files
        before it); blank texts skipped."""
        separate_test = split == "test" and self.test_files is not None
        k, n = (0, 1) if separate_test else self.stride
        files = self.test_files if separate_test else self.files
        first_file %= len(files)
        for row, (where, text, label) in enumerate(self._read(files[first_file:] + files[:first_file])):
            if row % n == k and text.strip() and (separate_test or self._split(text) == split):
                self.rows_read[split] += 1
                yield where, text, label

    def scan(self, vocab_size: int, max_len: int | None, count_cap: int, delim_regex: str = DELIM_REGEX,
             min_count: int = 1) -> dict:
        """One pass over the data (and --test-data): labels, split sizes, max_len, vocabulary."""
        split = re.compile(delim_regex)
        labels, train_labels = set(), Counter()
        sizes = {s: 0 for s in SPLITS}
        lengths = max_len_rule.empty_histogram()
        counter = BoundedCounter(count_cap)
        per_text = (max_len or max_len_rule.CAP) - 1  # the tokens the model reads (255 while max_len is unknown)
        counted = max(per_text, max_len_rule.CAP)  # the length histogram counts as far as the rule's cap
        blank, self.split_counts = 0, {str(path): Counter() for path in self.files}
        for path, (_, text, label) in ((p, row) for p in self.files for row in self._read([p])):
            if not text.strip():
                blank += 1
                continue
            part = self._split(text)
            sizes[part] += 1
            self.split_counts[str(path)][part] += 1
            labels.add(label)
            if part == "train":
                train_labels[label] += 1
                tokens = [t.lower() for t in itertools.islice(iter_tokens(split, text), counted)]
                lengths[max_len_rule.length_of(len(tokens))] += 1
                counter.update(tokens[:per_text])
        if sizes["train"] == 0:
            what = f" ({blank} blank texts skipped)" if blank else ""
            raise UserError(f"{self.source}: no training texts{what}; check --text-column and the split fractions")
        if len(labels) < 2:
            raise UserError(f"{self.source}: only one class ({next(iter(labels))!r}); a classifier needs at least two")
        ordered = label_order(list(labels))
        if self.test_files is not None:  # read now: an unknown test label should stop us before training
            for where, _, label in self.rows("test"):
                if label not in labels:
                    raise unseen_label(where, label, ordered, "--test-data")
                sizes["test"] += 1
        if max_len is None:
            max_len = max_len_rule.from_histogram(lengths)
        self.sizes, self.skipped_blank = sizes, blank
        words = vocabulary_from_counts(counter.counts, vocab_size, min_count)
        return {"labels": ordered, "label_counts": dict(train_labels), "max_len": max_len,
                "words": words, "words_pruned": counter.pruned}

    def batches(self, split: str, tokenizer: Tokenizer, label_index: dict, batch_size: int,
                seed: int | None = None, lengths: list[int] | None = None, weights: np.ndarray | None = None,
                steps: int | None = None, first_file: int = 0):
        """(ids, labels[, weights]) batches of one pass over a split; shuffled through a buffer if seeded.
        Labels are known: scan took them from every row of --data and checked --test-data's.
        `steps`: exactly that many full batches instead, topped up with the pass's first rows if the
        split runs out (data-parallel workers must all feed as many batches of the same shape).
        `first_file`: start reading there (rows()), so that a part larger than its share leaves out
        another file's last rows each epoch."""
        rows = self.rows(split, first_file)
        if seed is not None:
            rows = _buffer_shuffle(rows, SHUFFLE_BUFFER, random.Random(seed))
        if steps is not None:
            rows = itertools.islice(self._topped_up(rows, split), steps * batch_size)
        for chunk in chunks(rows, batch_size):
            ids = tokenizer.encode(text for _, text, _ in chunk)
            y = np.array([label_index[label] for _, _, label in chunk], np.int32)
            if lengths and len(chunk) == batch_size:  # cut to the texts' length (kerasrnn.batching.trim_lengths);
                # a short last batch keeps max_len, so that it adds one shape, not one per bucket
                ids = ids[:, : trimmed_width(ids, lengths)]
            yield (ids, y) if weights is None else (ids, y, weights[y].astype(np.float32))

    def _topped_up(self, rows, split: str):
        """The rows of one pass over a split, then its first rows again and again: a part
        smaller than an epoch's share is topped up from memory (at most SHUFFLE_BUFFER rows, the
        memory the shuffle takes anyway) instead of being read again. An empty part is an error."""
        kept = []
        for item in rows:
            if len(kept) < SHUFFLE_BUFFER:
                kept.append(item)
            yield item
        if not kept:
            raise UserError(f"{self.source}: this worker's part has no {split} texts; give the corpus more "
                            "shards or rows, or raise the split fraction")
        yield from itertools.cycle(kept)

    def describe(self) -> dict:
        return {"files": [str(f) for f in self.files], "test_files": [str(f) for f in self.test_files or []],
                "split": "hash of each text (blake2b)"}


def worker_part(corpus: Corpus, worker: int, workers: int) -> Corpus:
    """What one of `workers` data-parallel workers reads of --data: whole shards, dealt out by their
    training texts (bytes when not counted; the largest first, each to the worker with the fewest so
    far; ties to the lower index), so each shard is read by one worker. With fewer shards than
    workers, every shard is parsed by every worker and each keeps row k of every `workers` (its
    tokenizing and training still shrink)."""
    if workers == 1:
        return replace(corpus, rows_read=Counter())
    if len(corpus.files) < workers:
        return replace(corpus, stride=(worker, workers), rows_read=Counter())

    def size(path: Path) -> int:
        counts = corpus.split_counts.get(str(path))
        return counts.get("train", 0) if counts is not None else path.stat().st_size

    loads, mine = [0] * workers, []
    for path in sorted(corpus.files, key=lambda p: (-size(p), str(p))):
        k = min(range(workers), key=lambda i: (loads[i], i))
        loads[k] += size(path)
        if k == worker:
            mine.append(path)
    return replace(corpus, files=sorted(mine), rows_read=Counter())


def chunks(items, size: int):
    """Lists of `size` consecutive items (the last may be shorter)."""
    items = iter(items)
    while chunk := list(itertools.islice(items, size)):
        yield chunk


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
