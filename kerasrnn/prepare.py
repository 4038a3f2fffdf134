"""Data preparation: load, split, learn the vocabulary, encode. One result type, `Prepared`, for
data held in memory and for a corpus streamed from disk (kerasrnn.stream).

In memory: a stratified split seeded by --split-seed (else --seed), texts encoded into arrays.
Streamed (--stream, or a glob in --data / --test-data): one pass for labels, split sizes and
vocabulary; the split is by a hash of each text and the texts stay on disk.
Both derive max_len by the same rule (kerasrnn.max_len).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kerasrnn.tokenizer import Tokenizer


@dataclass
class Arrays:
    """The encoded splits of data held in memory."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    test_texts: list[str]
    train_texts: list[str]  # for the linear baseline (kerasrnn.baseline)


@dataclass
class Prepared:
    """What training needs of the data. Exactly one of `arrays` (in memory) and `corpus` (streamed)
    is set."""

    tokenizer: Tokenizer
    labels: list[str]
    summary: dict               # source, rows_used, blank_texts_skipped, train / validation / test sizes
    train_counts: np.ndarray    # training texts per label (float), for --class-weight balanced
    arrays: Arrays | None = None
    corpus: object | None = None  # kerasrnn.stream.Corpus
    linear_terms: dict | None = None  # the linear path's idf and word pairs, when a --vocab file has them

    @property
    def streamed(self) -> bool:
        return self.corpus is not None


def prepare_data(config: dict) -> Prepared:
    """Load, split and encode --data (and --test-data) as configured; every input check happens here."""
    from kerasrnn.stream import is_glob

    if config["stream"] or is_glob(config["data"]) or is_glob(config["test_data"]):
        return prepare_stream(config)
    if config.get("vocab"):
        from kerasrnn.errors import UserError

        raise UserError("--vocab goes with a streamed corpus (a glob of shards, or --stream): in memory the "
                        "vocabulary is learned on the stratified training split")
    return prepare_in_memory(config)


def prepare_in_memory(config: dict) -> Prepared:
    from kerasrnn import max_len
    from kerasrnn.data import encode_labels, label_order, load_dataset, stratified_split
    from kerasrnn.errors import UserError
    from kerasrnn.tokenizer import build_vocabulary

    data = load_dataset(config["data"], config["text_column"], config["label_column"])
    labels = label_order(data.labels)
    if len(labels) < 2:
        raise UserError(f"{data.source}: only one class ({labels[0]!r}); a classifier needs at least two")
    y = encode_labels(data, labels, "data")
    texts = np.array(data.texts, dtype=object)
    seed = config["seed"] if config.get("split_seed") is None else config["split_seed"]
    if config["test_data"]:
        test = load_dataset(config["test_data"], config["text_column"], config["label_column"])
        y_test = encode_labels(test, labels, "--test-data")
        train_idx, val_idx = stratified_split(y, [config["val_split"]], seed)
        x_test_text = list(test.texts)
    else:
        train_idx, val_idx, test_idx = stratified_split(y, [config["val_split"], config["test_split"]], seed)
        if len(test_idx) == 0:
            raise UserError(f"{data.source}: too few rows for a test split; add data, raise --test-split "
                            "or pass --test-data")
        x_test_text, y_test = list(texts[test_idx]), y[test_idx]
    train_texts = list(texts[train_idx])
    width = config["max_len"] or max_len.derive(train_texts)
    words = build_vocabulary(train_texts, config["vocab_size"], min_count=config["min_count"],
                             max_tokens=width - 1)
    tokenizer = Tokenizer(words, width)
    arrays = Arrays(x_train=tokenizer.encode(train_texts), y_train=y[train_idx],
                    x_val=tokenizer.encode(texts[val_idx]), y_val=y[val_idx],
                    x_test=tokenizer.encode(x_test_text), y_test=np.asarray(y_test), test_texts=x_test_text,
                    train_texts=train_texts)
    summary = {"source": data.source, "rows_used": len(data.texts), "blank_texts_skipped": data.skipped_blank,
               "train": len(train_idx), "validation": len(val_idx), "test": len(y_test)}
    trimmed = data.labels_trimmed + (test.labels_trimmed if config["test_data"] else 0)
    if trimmed:  # " spam" and "spam" are one class: say so, since the user may have meant two
        summary["labels_with_spaces_trimmed"] = trimmed
        print(f"labels: {trimmed} label(s) had surrounding spaces and were read without them "
              "(e.g. ' spam' as 'spam')")
    return Prepared(tokenizer, labels, summary, np.bincount(arrays.y_train, minlength=len(labels)).astype(float),
                    arrays=arrays)


def prepare_stream(config: dict) -> Prepared:
    """The streamed counterpart of prepare_in_memory: one pass for labels, split sizes and vocabulary,
    or none with a --vocab file (kerasrnn.vocab), which holds what that pass finds."""
    from kerasrnn import vocab
    from kerasrnn.errors import UserError

    corpus = vocab.corpus_for(config)
    terms = None
    if config.get("vocab"):
        found = vocab.load(config["vocab"], corpus, config)
        corpus.sizes, corpus.skipped_blank, terms = found["sizes"], found["blank_texts_skipped"], found["linear_terms"]
        print(f"vocabulary: {config['vocab']} ({len(found['words'])} words, max_len {found['max_len']}); "
              "the corpus is not scanned")
    else:
        found = vocab.scan(corpus, config)
    if corpus.sizes["test"] == 0:
        raise UserError(f"{corpus.source}: no text fell in the test split; add data, raise --test-split "
                        "or pass --test-data")
    if found["words_pruned"]:
        print(f"vocabulary: {found['words_pruned']} rare words dropped while counting (bounded memory)")
    labels, sizes = found["labels"], corpus.sizes
    summary = {"source": corpus.source, "rows_used": sum(sizes.values()), "blank_texts_skipped": corpus.skipped_blank,
               **sizes, "streamed": corpus.describe()}
    train_counts = np.array([found["label_counts"].get(lab, 0) for lab in labels], float)
    return Prepared(Tokenizer(found["words"], found["max_len"]), labels, summary, train_counts, corpus=corpus,
                    linear_terms=terms)
