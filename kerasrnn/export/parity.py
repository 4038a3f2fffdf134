"""Parity: every exported file must answer as the trained Keras model does.

For each artifact we feed the same token ids (batch 1, batch 32 with a ragged last batch) and, where
the artifact carries its own tokenizer (SavedModel `serve_text`, MediaPipe), the same raw texts. We
report max |dp|, max relative dp, argmax agreement, accuracy and its delta from Keras, and judge
each against the tolerance of its kind (TOLERANCES).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kerasrnn.errors import ParityError, UserError

# Pass rules, one table. max_abs: max |p_artifact - p_keras| over all probabilities;
# min_agreement: share of inputs with the same top label; max_acc_drop: accuracy points lost.
TOLERANCES = {
    "float32": {"max_abs": 1e-5, "min_agreement": 1.0, "max_acc_drop": 0.0},
    "float16": {"max_abs": None, "min_agreement": 0.99, "max_acc_drop": 0.5},
    "dynamic": {"max_abs": None, "min_agreement": 0.99, "max_acc_drop": 0.5},
    "int8": {"max_abs": None, "min_agreement": 0.99, "max_acc_drop": 1.0},
}
REL_FLOOR = 1e-3  # relative error is reported where Keras gives p >= this (tiny p make it meaningless)
# How each rule reads in the table and messages: measured quantity, its format, the comparison.
RULES = {"max_abs": ("max |dp|", "{:.2e}", ">", "{:.0e}"),
         "min_agreement": ("argmax agreement", "{:.4f}", "<", "{}"),
         "max_acc_drop": ("accuracy drop", "{:.2f} points", ">", "{}")}


@dataclass(frozen=True)
class Artifact:
    """One exported file to check, as the manifest describes it."""

    name: str            # its path in the exports folder, as the manifest names it
    path: Path
    format: str          # savedmodel, onnx, tflite, web
    quantization: str    # float32, float16, dynamic, int8
    graph: str | None = None


@dataclass(frozen=True)
class Failure:
    """One rule an artifact broke on one route: what was measured and the limit it crossed."""

    artifact: str
    route: str
    rule: str            # a key of TOLERANCES' rows: max_abs, min_agreement, max_acc_drop
    measured: float
    limit: float
    format: str = ""
    quantization: str = ""

    def reason(self) -> str:
        """The rule, measured value and limit as the table prints them."""
        what, value, op, limit = RULES[self.rule]
        return f"{what} {value.format(self.measured)} {op} {limit.format(self.limit)}"

    def __str__(self) -> str:
        return f"{self.artifact} ({self.route}): {self.reason()}"


class ParityFailed(ParityError):
    """Parity failed: `failures` (typed) says which artifact, route and rule, by how much."""

    def __init__(self, failures: list[Failure], lead: str = "", tail: str = ""):
        self.failures = list(failures)
        super().__init__(lead + "; ".join(str(f) for f in self.failures) + tail)


def edge_cases(max_len: int, sample: str = "free entry to win a prize call now") -> list[str]:
    return [
        "",                                            # empty
        "zzqxv qqwwzz xxyyzzq",                        # only unknown words
        " ".join([sample] * (max_len // 2 + 4)),       # longer than max_len
        sample.upper(),                                # all capitals
        sample.title(),                                # capitalised words
        "?!... ,,; --- ((()))",                        # punctuation only
        "Привет, как дела? Γειά σου κόσμε",            # Cyrillic, Greek
        "漢字とひらがな 中文测试 مرحبا بالعالم",          # CJK, Arabic
        "🙂🔥 free 🎉 prize!!! 👍🏽",                    # emoji, skin-tone modifier
        "Ünïcödé naïve café — “quoted” ‘text’…",       # accents, typographic punctuation
        "free\u00a0call\u3000now\u2028win",            # Unicode spaces and line separator
        "tab\tseparated\r\nlines\nhere",               # control whitespace
    ]


@dataclass
class Result:
    artifact: str
    path: str
    kind: str            # quantization kind: float32, float16, dynamic, int8
    route: str           # ids@batch1, ids@batch32, text
    n: int
    max_abs: float
    max_rel: float
    agreement: float
    accuracy: float | None
    accuracy_delta_points: float | None
    size_bytes: int
    passed: bool = False
    reasons: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def _batched(runtime, ids: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([runtime.predict_ids(ids[i:i + batch]) for i in range(0, len(ids), batch)])


def _compare(artifact: Artifact, route, probs, ref, y, size) -> Result:
    diff = np.abs(probs.astype(np.float64) - ref.astype(np.float64))
    big = ref >= REL_FLOOR
    rel = float((diff[big] / ref[big]).max()) if big.any() else 0.0
    agree = float((probs.argmax(1) == ref.argmax(1)).mean())
    acc = acc_delta = None
    if y is not None:
        labelled = y >= 0
        acc = float((probs[labelled].argmax(1) == y[labelled]).mean())
        acc_delta = round(100 * (acc - float((ref[labelled].argmax(1) == y[labelled]).mean())), 4)
    r = Result(artifact.name, str(artifact.path), artifact.quantization, route, len(probs), float(diff.max()), rel,
               agree, acc, acc_delta, size)
    tol = TOLERANCES[artifact.quantization]
    broken = []
    if tol["max_abs"] is not None and r.max_abs > tol["max_abs"]:
        broken.append(("max_abs", r.max_abs))
    if r.agreement < tol["min_agreement"]:
        broken.append(("min_agreement", r.agreement))
    if acc_delta is not None and -acc_delta > tol["max_acc_drop"] + 1e-9:
        broken.append(("max_acc_drop", -acc_delta))
    r.failures = [Failure(artifact.name, route, rule, measured, tol[rule], artifact.format, artifact.quantization)
                  for rule, measured in broken]
    r.reasons = [f.reason() for f in r.failures]
    r.passed = not r.failures
    return r


def artifacts_from_entries(exports: Path, entries: dict) -> list[Artifact]:
    """The files to check, from manifest "artifacts" entries (format -> entry, or for tflite
    file name -> entry): what each file is comes from its entry, not from its name. Entries whose
    file is missing are left out (a folder copied in part); verify_manifest reports them."""
    from kerasrnn.export.formats import FORMATS

    found = []
    for fmt in [f for f in FORMATS if f in entries] + sorted(f for f in entries if f not in FORMATS):
        section = entries[fmt]
        files = [section] if "path" in section else [e for e in section.values() if isinstance(e, dict) and "path" in e]
        for entry in sorted(files, key=lambda e: e["path"]):
            path = exports / entry["path"]
            if path.exists():
                found.append(Artifact(entry["path"], path, fmt, entry.get("quantization", "float32"), entry.get("graph")))
    return found


def artifacts_from_manifest(exports: Path) -> list[Artifact]:
    """Every artifact the exports folder's manifest.json lists and that is there."""
    return artifacts_from_entries(exports, read_manifest(exports).get("artifacts", {}))


def read_manifest(exports: Path) -> dict:
    manifest_path = exports / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"{manifest_path}: no manifest; run `python tools/export.py` first")
    try:
        return json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{manifest_path}: damaged ({exc}); export again with `python tools/export.py`") from None


def check(keras_model, tokenizer, labels: list[str], artifacts: list[Artifact],
          texts: list[str], text_labels: list[str] | None, batch1_limit: int | None = None,
          mediapipe: bool = True, log=print) -> list[Result]:
    """Compare each artifact with the Keras model on `texts` (+ edge cases)."""
    from kerasrnn.fileio import path_size
    from kerasrnn.runtimes import MediaPipeRuntime, open_model

    n_text = len(texts)
    texts = list(texts) + edge_cases(tokenizer.max_len)
    index = {lab: i for i, lab in enumerate(labels)}
    y = None
    if text_labels is not None:
        y = np.array([index.get(lab, -1) for lab in text_labels] + [-1] * (len(texts) - len(text_labels)))
    ids = tokenizer.encode(texts)
    ref = np.asarray(keras_model.predict(ids, batch_size=256, verbose=0), dtype=np.float32)
    # Batch-1 rows: the first texts (all of them unless limited) plus every edge case.
    take = n_text if batch1_limit is None else min(n_text, batch1_limit)
    rows1 = np.r_[np.arange(take), np.arange(n_text, len(texts))]
    results = []
    for artifact in artifacts:
        path = artifact.path
        size = path_size(path)
        runtime = open_model(path, threads=1)
        tflite = path.suffix == ".tflite"  # the web page's model is a .tflite too
        if tflite:
            routes = [("ids@batch1", lambda: runtime.predict_ids(ids), slice(None))]
        else:
            routes = [("ids@batch1", lambda: _batched(runtime, ids[rows1], 1), rows1),
                      ("ids@batch32", lambda: _batched(runtime, ids, 32), slice(None))]
        if artifact.format == "savedmodel":
            routes.append(("text@batch32", lambda: np.concatenate(
                [runtime.predict_texts(texts[i:i + 32]) for i in range(0, len(texts), 32)]), slice(None)))
        for route, fn, rows in routes:
            probs = fn()
            results.append(_compare(artifact, route, probs, ref[rows], None if y is None else y[rows], size))
            log(format_row(results[-1]))
        if tflite and mediapipe:
            mp = MediaPipeRuntime(path)
            probs = mp.predict_texts(texts)
            mp.close()
            results.append(_compare(artifact, "mediapipe-text", probs, ref, y, size))
            log(format_row(results[-1]))
    return results


HEADER = (f"{'artifact':28} {'route':15} {'n':>5} {'max|dp|':>9} {'max rel':>9} {'agree':>7} "
          f"{'acc':>7} {'dacc pt':>8} {'size':>10}  result")


def format_row(r: Result) -> str:
    acc = f"{r.accuracy:.4f}" if r.accuracy is not None else "-"
    dacc = f"{r.accuracy_delta_points:+.2f}" if r.accuracy_delta_points is not None else "-"
    return (f"{r.artifact:28} {r.route:15} {r.n:5d} {r.max_abs:9.2e} {r.max_rel:9.2e} {r.agreement:7.4f} "
            f"{acc:>7} {dacc:>8} {r.size_bytes:10d}  {'PASS' if r.passed else 'FAIL: ' + '; '.join(r.reasons)}")


def write_report(results: list[Result], path: Path, extra: dict) -> None:
    from kerasrnn.fileio import write_json_atomic

    write_json_atomic(path, {**extra, "tolerances": TOLERANCES, "relative_error_floor": REL_FLOOR,
                             "passed": all(r.passed for r in results),
                             "results": [_row(r) for r in results]})


def _row(r: Result) -> dict:
    """A result as parity.json records it (reasons as text; the typed failures are what they say)."""
    row = asdict(r)
    del row["failures"]
    return row


def load_texts(path: Path, text_column: str = "text", label_column: str = "label"):
    from kerasrnn.data import load_dataset

    data = load_dataset(path, text_column, label_column)
    return data.texts, data.labels


def verify_manifest(exports: Path) -> list[str]:
    """Problems with the files listed in manifest.json: missing or changed (by sha256)."""
    from kerasrnn.fileio import sha256_file

    manifest = read_manifest(exports)
    problems = []
    for rel, entry in manifest.get("files", {}).items():
        f = exports / rel
        if not f.is_file():
            problems.append(f"missing: {rel}")
        elif sha256_file(f) != entry["sha256"]:
            problems.append(f"modified: {rel} (sha256 differs from manifest)")
    return problems
