"""A run folder: what training writes and everything else reads.

runs/<timestamp>/ holds model.keras, vocab.txt, labels.txt, config.json, metrics.json, history.csv,
the PNGs and a model card. `runs/latest` is a small text file naming the newest run folder (a
symlink would not work on every OS); every `--run` argument accepts it as well as a folder.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kerasrnn.errors import UserError
from kerasrnn.tokenizer import Tokenizer

MODEL_FILE = "model.keras"
VOCAB_FILE = "vocab.txt"
LABELS_FILE = "labels.txt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
SPLIT_FILE = "test_split.jsonl"
LATEST = "latest"


def resolve_run(path: str | Path) -> Path:
    """A run folder, or the folder named by a `latest` pointer file."""
    path = Path(path)
    if path.is_file():
        target = path.read_text(encoding="utf-8").strip()
        path = (path.parent / target) if target else path
    if not path.is_dir():
        raise UserError(f"{path}: no run folder here; train one with `python -m kerasrnn.train` or pass --run DIR")
    if not (path / CONFIG_FILE).is_file():
        raise UserError(f"{path}: not a finished run folder (no {CONFIG_FILE}); pass the folder training wrote")
    return path


def read_labels(path: Path) -> list[str]:
    return [line for line in Path(path).read_text(encoding="utf-8").split("\n") if line]


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc}); the file is missing or damaged") from None


@dataclass
class RunInfo:
    path: Path
    config: dict
    labels: list[str]
    tokenizer: Tokenizer

    @classmethod
    def load(cls, path: str | Path) -> "RunInfo":
        path = resolve_run(path)
        config = read_json(path / CONFIG_FILE)
        tok = config["tokenizer"]
        if config.get("max_len", tok["max_len"]) != tok["max_len"]:
            raise UserError(f"{path / CONFIG_FILE}: max_len {config['max_len']} differs from tokenizer.max_len "
                            f"{tok['max_len']}; the file is damaged")
        tokenizer = Tokenizer.load(path / VOCAB_FILE, tok["max_len"], tok["delim_regex"])
        return cls(path, config, read_labels(path / LABELS_FILE), tokenizer)

    @property
    def max_len(self) -> int:
        """The one max_len exporters read: the tokenizer's (config.json also keeps a top-level copy)."""
        return self.tokenizer.max_len

    @property
    def architecture(self) -> dict:
        """config.json with max_len taken from the tokenizer: what the export graphs are built from."""
        return {**self.config, "max_len": self.max_len}

    def load_model(self):
        return load_keras_model(self.path / MODEL_FILE)

    def test_split(self) -> tuple[list[str], list[str]]:
        """The texts and labels training held out for testing (saved so parity can reuse them)."""
        texts, labels = [], []
        file = self.path / SPLIT_FILE
        if file.is_file():
            for line in file.read_text(encoding="utf-8").split("\n"):
                if line:
                    row = json.loads(line)
                    texts.append(row["text"])
                    labels.append(row["label"])
        return texts, labels


def load_keras_model(path: Path):
    """Load a .keras file in safe mode: a file carrying Python code (Lambda layers) is refused."""
    import keras

    import kerasrnn.model  # noqa: F401 - registers the warning filter for our max-pooling layer

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model file")
    try:
        import kerasrnn.linear  # noqa: F401  registers the linear path's layer class with Keras

        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            raise UserError(f"{path}: refused: the model carries Python code (a Lambda layer) that "
                            "safe mode will not run; rebuild it without Lambda layers") from None
        raise UserError(f"{path}: cannot load this .keras file ({str(exc).splitlines()[0]})") from None
    except Exception as exc:  # zip errors, missing members: a damaged file
        raise UserError(f"{path}: cannot load this .keras file ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'damaged'})") from None
