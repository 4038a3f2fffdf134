"""The corpus pass, done once for a cluster: `python -m kerasrnn.vocab --data 'shards/*.csv.gz' --output FILE`.

Before training, a streamed corpus is read in full: once for its labels, split sizes, max_len and
vocabulary (kerasrnn.stream.Corpus.scan), once more for the linear path's idf and word pairs
(kerasrnn.linear.term_statistics). Every worker of a multi-worker run would repeat both passes over
the whole corpus. This step makes them once and writes what they found to one JSON file;
`python -m kerasrnn.train --vocab FILE` then skips both. Training checks that the file was made
from the same shards (names and byte sizes) with the same options, and says what differs if not.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from kerasrnn.errors import UserError, cli_main

KIND = "kerasrnn corpus vocabulary"
VERSION = 1
# The options the passes depend on: the file holds their values and a run must ask for the same.
VOCAB_KEYS = ("text_column", "label_column", "test_split", "val_split", "vocab_size", "min_count", "max_len",
              "linear", "bigrams")


def corpus_for(config: dict):
    """The streamed corpus of --data (and --test-data) as configured (kerasrnn.stream.Corpus)."""
    from kerasrnn.stream import Corpus, shard_files

    return Corpus(shard_files(config["data"]), shard_files(config["test_data"]) if config["test_data"] else None,
                  config["text_column"], config["label_column"], config["val_split"], config["test_split"])


def scan(corpus, config: dict) -> dict:
    """The first pass (kerasrnn.stream.Corpus.scan) with the configured sizes."""
    return corpus.scan(config["vocab_size"], config["max_len"], min_count=config["min_count"],
                       count_cap=max(200_000, 20 * config["vocab_size"]))


def linear_terms(corpus, tokenizer, bigrams: int) -> dict:
    """The second pass: the linear path's idf and word-pair table over the training split."""
    from kerasrnn.linear import term_statistics
    from kerasrnn.stream import chunks

    ids = (tokenizer.encode(text for _, text, _ in chunk) for chunk in chunks(corpus.rows("train"), 1024))
    return term_statistics(ids, tokenizer.vocab_size, bigrams)


def _files(paths) -> list[dict]:
    return [{"path": str(p), "bytes": Path(p).stat().st_size} for p in paths or []]


def build(config: dict) -> dict:
    """Both passes over the corpus of `config`, as the file's JSON object."""
    from kerasrnn.tokenizer import Tokenizer

    corpus = corpus_for(config)
    found = scan(corpus, config)
    terms = None
    if config["linear"] != "none":
        terms = linear_terms(corpus, Tokenizer(found["words"], found["max_len"]), config["bigrams"])
        terms = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in terms.items()}
    return {"kind": KIND, "version": VERSION, "options": {k: config[k] for k in VOCAB_KEYS},
            "files": _files(corpus.files), "test_files": _files(corpus.test_files),
            "sizes": corpus.sizes, "blank_texts_skipped": corpus.skipped_blank, **found, "linear_terms": terms}


def load(path: str, corpus, config: dict) -> dict:
    """The file at `path`, checked against this run's corpus and options; the linear terms as arrays."""
    try:
        vocab = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read the vocabulary file ({exc.strerror}); make it with "
                        "python -m kerasrnn.vocab") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}:{exc.colno}: not a vocabulary file (invalid JSON: {exc.msg})") from None
    if not isinstance(vocab, dict) or vocab.get("kind") != KIND or vocab.get("version") != VERSION:
        raise UserError(f"{path}: not a kerasrnn vocabulary file (version {VERSION}); make it with "
                        "python -m kerasrnn.vocab")
    again = "make it again with python -m kerasrnn.vocab for this corpus and these options"
    if vocab["files"] != _files(corpus.files) or vocab["test_files"] != _files(corpus.test_files):
        raise UserError(f"{path}: made from other files than --data / --test-data name now (or they have changed "
                        f"size); {again}")
    keys = [k for k in VOCAB_KEYS if config["linear"] != "none" or k not in ("linear", "bigrams")]
    differ = [k for k in keys if vocab["options"].get(k) != config[k]]
    if differ:
        was = " ".join(f"--{k.replace('_', '-')} {vocab['options'].get(k)}" for k in differ)
        raise UserError(f"{path}: made with other options ({was}); train with those or {again}")
    terms = vocab["linear_terms"]
    if terms is not None:
        dtypes = {"idf": np.float32, "bigram_keys": np.int32, "bigram_rows": np.int32}
        vocab["linear_terms"] = {k: np.asarray(v, dtypes[k]) if k in dtypes else v for k, v in terms.items()}
    return vocab


def main(argv=None) -> int:
    from kerasrnn.fileio import write_json_atomic
    from kerasrnn.options import DEFAULTS, LINEAR_CHOICES, check

    p = argparse.ArgumentParser(prog="python -m kerasrnn.vocab", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the corpus: a glob of shards (quote it) or one file")
    p.add_argument("--output", required=True, help="the vocabulary file to write (JSON; never overwritten)")
    p.add_argument("--test-data", help="a separate test corpus, as in training")
    for key in VOCAB_KEYS:
        kind = {"linear": str, "text_column": str, "label_column": str, "test_split": float, "val_split": float}
        extra = {"choices": LINEAR_CHOICES} if key == "linear" else {}
        p.add_argument(f"--{key.replace('_', '-')}", type=kind.get(key, int), default=DEFAULTS[key], **extra,
                       help=f"as in python -m kerasrnn.train (default {DEFAULTS[key]})")
    config = vars(p.parse_args(argv))
    out = Path(config.pop("output"))
    check({**DEFAULTS, **config})
    if out.exists():
        raise UserError(f"{out}: already exists; choose another --output (nothing is overwritten)")
    vocab = build(config)
    write_json_atomic(out, vocab)
    print(f"{out}: {len(vocab['words'])} words, max_len {vocab['max_len']}, {len(vocab['labels'])} labels, "
          f"{vocab['sizes']['train']} training texts in {len(vocab['files'])} file(s); "
          f"train with --vocab {out} on every worker")
    return 0


def cli() -> None:
    """Console-script entry point."""
    sys.exit(cli_main(main))


if __name__ == "__main__":
    cli()
