"""After training: the test split's predictions and the report of the run (kerasrnn.train).

The linear path and the RNN are weighed on the validation split first (kerasrnn.paths), the test
split is predicted and written into the run as it goes, and the linear baseline is trained on the
same split (kerasrnn.baseline).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kerasrnn.prepare import Prepared


def evaluate(model, data: Prepared, partial: Path, statistics: dict | None) -> dict:
    """metrics.json's report: accuracy and per-class figures on the test split, how the paths were
    combined, the linear baseline beside them."""
    from kerasrnn.metrics import classification_report

    combination = None
    if statistics:
        combination = {**combine_paths(model, data), "linear_solver": statistics["solver"]}
        if statistics["solver"] == "liblinear":
            combination["linear_svm"] = {k: statistics["svm"][k] for k in ("C", "validation_accuracy")}
    y_true, y_pred = predict_test(model, data, partial)
    report = classification_report(y_true, y_pred, data.labels)
    if combination:
        report["paths"] = combination
    report["linear_baseline"] = run_baseline(data)
    # Its time goes to config.json with the other timings: metrics.json stays byte-reproducible.
    report["linear_baseline_cpu_seconds"] = report["linear_baseline"].pop("seconds", None)
    return report


def combine_paths(model, data: Prepared) -> dict:
    """Weigh the RNN's logits against the linear path's on the validation split (the training split
    when there is none) and fold the weight and a temperature into the model (kerasrnn.paths)."""
    from kerasrnn import paths
    from kerasrnn.stream import chunks

    if data.summary["validation"] > 0:
        split = "validation"
        if data.streamed:
            pairs = [(t, data.labels.index(lab)) for chunk in chunks(data.corpus.rows("validation"), 4096)
                     for _, t, lab in chunk]
            x, y = data.tokenizer.encode(t for t, _ in pairs), np.array([lab for _, lab in pairs])
        else:
            x, y = data.arrays.x_val, data.arrays.y_val
    else:
        split = "training"
        x, y = data.arrays.x_train, data.arrays.y_train
    out = {**paths.combine(model, x, y, len(data.labels)), "chosen_on": split}
    print(f"paths: RNN logits weighted {out['rnn_weight']:g} against the linear path's, temperature "
          f"{out['temperature']:.3g} ({split} accuracy: linear {out['linear_path_accuracy']:.4f}, RNN "
          f"{out['rnn_path_accuracy']:.4f}, together {out['accuracy']:.4f})")
    return out


def run_baseline(data: Prepared) -> dict:
    """The linear baseline on the same split (kerasrnn.baseline); a streamed corpus is not in memory."""
    from kerasrnn.baseline import NAME, linear_baseline

    if data.arrays is None:
        return {"model": NAME, "skipped": "streamed data (the baseline needs the texts in memory)"}
    a = data.arrays
    return linear_baseline(a.train_texts, a.y_train, a.test_texts, a.y_test, data.labels)


def predict_test(model, data: Prepared, partial: Path) -> tuple[np.ndarray, np.ndarray]:
    """Test labels and predictions; the test split is written into the run as it is predicted
    (streamed: a chunk at a time, the texts are not in memory)."""
    from kerasrnn import run as R
    from kerasrnn.fileio import open_atomic
    from kerasrnn.run_writer import test_split_line
    from kerasrnn.stream import chunks

    labels = data.labels
    with open_atomic(partial / R.SPLIT_FILE, "w") as split_file:
        if not data.streamed:
            a = data.arrays
            split_file.writelines(test_split_line(t, labels[int(y)]) for t, y in zip(a.test_texts, a.y_test))
            return a.y_test, model.predict(a.x_test, batch_size=256, verbose=0).argmax(axis=1)
        index = {lab: i for i, lab in enumerate(labels)}
        y_true, y_pred = [], []
        for chunk in chunks(data.corpus.rows("test"), 1024):
            split_file.writelines(test_split_line(text, label) for _, text, label in chunk)
            y_true.append(np.array([index[label] for _, _, label in chunk], np.int32))
            ids = data.tokenizer.encode(text for _, text, _ in chunk)
            y_pred.append(model.predict(ids, batch_size=256, verbose=0).argmax(axis=1))
    return np.concatenate(y_true), np.concatenate(y_pred)
