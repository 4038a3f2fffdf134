"""Classification metrics in plain numpy (no scikit-learn dependency)."""
from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision / recall / F1 / support, confusion matrix."""
    cm = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(cm).astype(float)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = actual > 0  # macro-F1 over classes that occur in the test split
    return {
        "accuracy": round(float(tp.sum() / max(cm.sum(), 1)), 6),
        "macro_f1": round(float(f1[present].mean()) if present.any() else 0.0, 6),
        "num_examples": int(cm.sum()),
        "per_class": {
            lab: {"precision": round(float(precision[i]), 6), "recall": round(float(recall[i]), 6),
                  "f1": round(float(f1[i]), 6), "support": int(actual[i])}
            for i, lab in enumerate(labels)
        },
        "confusion_matrix": {"labels": labels, "rows_true_cols_predicted": cm.tolist()},
    }
