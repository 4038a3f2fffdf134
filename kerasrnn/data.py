"""Reading labelled text: CSV, TSV, JSONL or a folder of class sub-folders, and the seeded split.

Every problem a user can fix is raised as a `UserError` that names the file and, where there is
one, the line and column.
"""
from __future__ import annotations

import csv
import gzip
import json
import os
import sys
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from kerasrnn.errors import UserError

DEFAULT_DATASET = "sms_spam.csv.gz"  # packaged in kerasrnn/data/, see ATTRIBUTION.md there
TEXT_SUFFIXES = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson")


@dataclass
class Dataset:
    texts: list[str]
    labels: list[str]
    source: str
    skipped_blank: int = 0
    label_lines: list[int] = field(default_factory=list)  # line of each row, for error messages
    labels_trimmed: int = 0  # rows whose label had surrounding spaces (" spam" is read as "spam")


def default_dataset_path() -> Path:
    return Path(str(resources.files("kerasrnn") / "data" / DEFAULT_DATASET))


def _label_to_str(value, where: str) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise UserError(f"{where}: label {value!r} is not a string or an integer; fix the label")
    if isinstance(value, float):
        if not value.is_integer():
            raise UserError(f"{where}: label {value!r} is not a string or an integer; fix the label")
        value = int(value)
    return str(value).strip()


def _not_utf8(name, line: int, column: int, byte: int) -> UserError:
    return UserError(f"{name}:{line}:{column}: byte 0x{byte:02x} is not valid UTF-8; re-save the file as UTF-8")


def _not_gzip(path: Path, exc: Exception) -> UserError:
    return UserError(f"{path}: not a valid gzip file ({exc}); re-compress it")


def _decode(raw: bytes, name: str) -> str:
    try:
        text = raw.decode("utf-8-sig")  # tolerate a BOM, as spreadsheets write one
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _not_utf8(name, line, column, raw[exc.start]) from None
    # NUL is kept out of texts: it truncates strings in C APIs (MediaPipe) and breaks csv.
    return text.replace("\x00", " ")


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror}); check the path and permissions") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise _not_gzip(path, exc) from None
    return raw


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise UserError(
        f"{path}: unknown file type {suffix or '(none)'!r}; use .csv, .tsv, .jsonl (optionally .gz) "
        "or a folder with one sub-folder of .txt files per class"
    )


def _lines(text: str):
    """Lines with their endings, one at a time: a StringIO would hold a 4-byte-per-character copy."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def decoded_lines(path: Path):
    """The lines of a file (gzip too), decoded one at a time: for shards larger than memory."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise _not_utf8(path, number, exc.start + 1, raw[exc.start]) from None
                yield line.replace("\x00", " ")  # as _decode does
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise _not_gzip(path, exc) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc}); check the path and permissions") from None


def _records(path: Path, lines, delimiter: str):
    """(line number, fields) per record. Lines without a quote are split directly; the csv module
    parses the rest (quoted fields may span lines). The csv module holds each field in a
    4-byte-per-character buffer, which for one 100 MB line alone would cost 400 MB."""
    pushback: list[str] = []
    line_num = 0

    def feed():
        nonlocal line_num
        while True:
            line = pushback.pop() if pushback else next(lines, None)
            if line is None:
                return
            line_num += 1
            yield line

    reader = csv.reader(feed(), delimiter=delimiter, strict=True)
    for line in lines:
        if '"' not in line:
            line_num += 1
            fields = line.split(delimiter)
            fields[-1] = fields[-1].rstrip("\r\n")
            yield line_num, ([] if fields == [""] else fields)
            continue
        pushback.append(line)
        first = line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            where = f"{first}" if first == line_num else f"{first} (record runs to line {line_num})"
            raise UserError(f"{path}:{where}: malformed row ({exc}); check the quotes of line {first}") from None
        yield line_num, row


def read_delimited(path: Path, lines, delimiter: str, text_column: str, label_column: str):
    """(line, text, label) per row of a CSV/TSV given as an iterator of lines."""
    csv.field_size_limit(sys.maxsize)
    records = _records(path, lines, delimiter)
    _, header = next(records, (0, None))
    if not header or not any(h.strip() for h in header):
        raise UserError(f"{path}: the file is empty; it needs a header line and rows")
    header = [h.strip() for h in header]
    for wanted in (text_column, label_column):
        if wanted not in header:
            raise UserError(
                f"{path}:1: no column {wanted!r}; available: {', '.join(map(repr, header))} "
                "(use --text-column / --label-column)"
            )
        if header.count(wanted) > 1:
            columns = ", ".join(str(i + 1) for i, h in enumerate(header) if h == wanted)
            raise UserError(f"{path}:1: column {wanted!r} appears {header.count(wanted)} times (columns {columns}); "
                            "rename the one that is not meant, so it is clear which to read")
    ti, li = header.index(text_column), header.index(label_column)
    for line_num, row in records:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != len(header):
            raise UserError(
                f"{path}:{line_num}: {len(row)} fields where the header has {len(header)}; "
                "quote fields that contain the delimiter"
            )
        yield line_num, row[ti], row[li]


def read_jsonl(path: Path, lines, text_column: str, label_column: str):
    """(line, text, label) per line of a JSONL file given as an iterator of lines."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}:{exc.colno}: invalid JSON ({exc.msg}); fix this line") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{number}: expected a JSON object per line")
        for wanted in (text_column, label_column):
            if wanted not in obj:
                raise UserError(
                    f"{path}:{number}: no key {wanted!r}; available: {', '.join(map(repr, obj))} "
                    "(use --text-column / --label-column)"
                )
        value = obj[text_column]
        if not isinstance(value, str):
            raise UserError(f"{path}:{number}: {text_column!r} is not a string")
        yield number, value, obj[label_column]


def read_rows(path: Path, lines, text_column: str, label_column: str):
    """(line, text, label) per row, by file type."""
    fmt = _format_of(path)
    if fmt == "jsonl":
        return read_jsonl(path, lines, text_column, label_column)
    return read_delimited(path, lines, "\t" if fmt == "tsv" else ",", text_column, label_column)


# Characters that end a line for str.splitlines (and for readers of labels.txt, MediaPipe's among them).
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def checked_label(label, where: str) -> str:
    label = _label_to_str(label, where)
    if not label:
        raise UserError(f"{where}: empty label; fill it in or remove the row")
    if any(c in LINE_BREAKS for c in label):
        # labels.txt holds one label per line: such a label would become two category names.
        raise UserError(f"{where}: label {label!r} contains a line break; labels are written one per line "
                        "to labels.txt, so rename it without the line break")
    return label


def _read_folder(path: Path):
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"{path}: folder has no class sub-folders; put each class's .txt files in a sub-folder")
    rows = []
    for cls in classes:
        for file in sorted(cls.rglob("*.txt")):
            rows.append((str(file), _decode(_read_bytes(file), str(file)), cls.name))
    if not rows:
        raise UserError(f"{path}: no .txt files in its class sub-folders")
    return rows


def load_dataset(path: str | os.PathLike | None, text_column: str = "text", label_column: str = "label") -> Dataset:
    """Read a labelled dataset; `None` reads the packaged SMS spam data."""
    path = Path(path) if path is not None else default_dataset_path()
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; check the --data path")
    if path.is_dir():
        rows = _read_folder(path)
    else:
        _format_of(path)  # an unknown type is refused before the file is read
        text = _decode(_read_bytes(path), str(path))
        if not text.strip():
            raise UserError(f"{path}: the file is empty; it needs a header line and rows")
        rows = read_rows(path, _lines(text), text_column, label_column)
    texts, labels, lines, blank, trimmed = [], [], [], 0, 0
    for line, text, label in rows:
        where = line if isinstance(line, str) else f"{path}:{line}"
        trimmed += isinstance(label, str) and label != label.strip()
        label = checked_label(label, where)
        if not text.strip():
            blank += 1
            continue
        texts.append(text)
        labels.append(label)
        lines.append(line)
    if not texts:
        what = f" ({blank} blank texts skipped)" if blank else ""
        raise UserError(f"{path}: no non-empty texts{what}; check --text-column")
    return Dataset(texts, labels, str(path), blank, lines, trimmed)


def label_order(labels: list[str]) -> list[str]:
    """Integers sort numerically, anything else alphabetically; the order is saved with the run."""
    unique = set(labels)
    if all(lab.lstrip("-").isdigit() for lab in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def encode_labels(dataset: Dataset, labels: list[str], role: str) -> np.ndarray:
    index = {lab: i for i, lab in enumerate(labels)}
    out = np.empty(len(dataset.labels), dtype=np.int32)
    for i, lab in enumerate(dataset.labels):
        if lab not in index:
            line = dataset.label_lines[i]
            raise unseen_label(line if isinstance(line, str) else f"{dataset.source}:{line}", lab, labels, role)
        out[i] = index[lab]
    return out


def unseen_label(where: str, label: str, labels: list[str], role: str) -> UserError:
    return UserError(f"{where}: label {label!r} in {role} was never seen in training "
                     f"(known: {', '.join(labels[:10])}{', ...' if len(labels) > 10 else ''}); remove or relabel it")


def stratified_split(y: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Split indices into len(fractions)+1 parts, class by class, reproducibly for a seed.

    Each class keeps at least one example in the first (training) part when it can.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        start = 0
        sizes = [int(round(f * len(idx))) for f in fractions]
        while sum(sizes) >= len(idx) and any(sizes):  # always keep one for training
            sizes[int(np.argmax(sizes))] -= 1
        for k, size in enumerate(sizes, start=1):
            parts[k].extend(idx[start:start + size])
            start += size
        parts[0].extend(idx[start:])
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
