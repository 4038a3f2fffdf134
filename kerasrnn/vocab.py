"""The corpus pass, done once for a cluster: `python -m kerasrnn.vocab --data 'shards/*.csv.gz' --output FILE`.

Before training, a streamed corpus is read in full: once for its labels, split sizes, max_len and
vocabulary (kerasrnn.stream.Corpus.scan), once more for the linear path's idf and word pairs
(kerasrnn.linear.term_statistics). Every worker of a multi-worker run would repeat both passes over
the whole corpus. This step makes them once and writes what they found to one JSON file;
`python -m kerasrnn.train --vocab FILE` then skips both. Training checks that the file was made
from the same shards (each one's name, size and a hash of its first and last MiB) with the same
options, and says what differs if not.
"""
from __future__ import annotations

import argparse
import hashlib
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
    """What identifies each file: its name, size and a hash of its first and last MiB (the same on
    every host a copy of the shards sits on, wherever they are mounted)."""
    out = []
    for path in map(Path, paths or []):
        size, digest = path.stat().st_size, hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            digest.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), 2)
            digest.update(f.read(1 << 20))
        out.append({"name": path.name, "bytes": size, "blake2b": digest.hexdigest()})
    return out


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
            "split_counts": [corpus.split_counts[str(p)] for p in corpus.files], "sizes": corpus.sizes,
            "blank_texts_skipped": corpus.skipped_blank, **found, "linear_terms": terms}


def load(path: str, corpus, config: dict) -> dict:
    """The file at `path`, checked against this run's corpus and options; the linear terms as arrays."""
    try:
        vocab = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a vocabulary file (not UTF-8 text); make it with python -m kerasrnn.vocab") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the vocabulary file ({exc.strerror}); make it with "
                        "python -m kerasrnn.vocab") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}:{exc.colno}: not a vocabulary file (invalid JSON: {exc.msg})") from None
    if not isinstance(vocab, dict) or vocab.get("kind") != KIND or vocab.get("version") != VERSION:
        raise UserError(f"{path}: not a kerasrnn vocabulary file (version {VERSION}); make it with "
                        "python -m kerasrnn.vocab")
    again = "make it again with python -m kerasrnn.vocab for this corpus and these options"
    try:
        for what, then, now in (("--data", vocab["files"], _files(corpus.files)),
                                ("--test-data", vocab["test_files"], _files(corpus.test_files))):
            if then != now:
                differ = next((f"{b['name']} is not {a['name']} as it was ({a['bytes']} bytes then, {b['bytes']} now, "
                               "or other content)" for a, b in zip(then, now) if a != b),
                              f"{len(now)} files, not {len(then)}")
                raise UserError(f"{path}: made from other files than {what} names now: {differ}; {again}")
        # max_len: none asked for takes the file's; one asked for must be the file's (given or derived).
        keys = [k for k in VOCAB_KEYS if k != "max_len" and (config["linear"] != "none" or k not in ("linear", "bigrams"))]
        made = {**vocab["options"], "max_len": vocab["max_len"]}
        differ = [k for k in keys if made[k] != config[k]]
        if config["max_len"] not in (None, made["max_len"]):
            differ.append("max_len")
        if differ:
            was = " ".join(f"--{k.replace('_', '-')} {made[k]}" for k in differ)
            raise UserError(f"{path}: made with other options ({was}); train with those or {again}")
        corpus.split_counts = dict(zip(map(str, corpus.files), vocab["split_counts"], strict=True))
        terms = vocab["linear_terms"]
        if terms is not None:
            dtypes = {"idf": np.float32, "bigram_keys": np.int32, "bigram_rows": np.int32}
            vocab["linear_terms"] = {k: np.asarray(v, dtypes[k]) if k in dtypes else v for k, v in terms.items()}
        vocab["words"], vocab["labels"], vocab["sizes"], vocab["label_counts"]  # noqa: B018 (present)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: a damaged vocabulary file ({type(exc).__name__}: {exc}); {again}") from None
    return vocab


def main(argv=None) -> int:
    from kerasrnn.fileio import write_json_atomic
    from kerasrnn.options import DEFAULTS, LINEAR_CHOICES, check

    p = argparse.ArgumentParser(prog="python -m kerasrnn.vocab", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the corpus: a glob of shards (quote it) or one file")
    p.add_argument("--output", required=True, help="the vocabulary file to write (JSON; never overwritten)")
    p.add_argument("--test-data", help="a separate test corpus, as in training")
    kind = {"linear": str, "text_column": str, "label_column": str, "test_split": float, "val_split": float}
    for key in VOCAB_KEYS:
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
