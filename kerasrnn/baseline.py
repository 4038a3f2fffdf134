"""The linear baseline every run reports beside its own metrics: TF-IDF word 1-2 grams (sublinear tf,
min_df 2) + LinearSVC (C=1), the reference of the shared datasets' SOURCES.md, trained on the same
training texts and scored on the same test texts. It takes seconds of CPU and tells a user whether
the recurrent model earns its place on their data.

scikit-learn is a dependency for this one purpose; where it is missing (an install without it) the
run says how to get it instead of failing.
"""
from __future__ import annotations

import time

import numpy as np

NAME = "TF-IDF word 1-2 grams + LinearSVC"


def linear_baseline(train_texts: list[str], y_train: np.ndarray, test_texts: list[str], y_test: np.ndarray,
                    labels: list[str], predictions: bool = False) -> dict:
    """{"model", "accuracy", "macro_f1", "seconds"} (+ "y_pred" if `predictions`), or {"model",
    "skipped"} with the reason."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.svm import LinearSVC
    except ImportError:
        return {"model": NAME, "skipped": "scikit-learn is not installed (pip install scikit-learn)"}
    from kerasrnn.metrics import classification_report

    if len(np.unique(y_train)) < 2:
        return {"model": NAME, "skipped": "the training split holds one class"}
    started = time.process_time()
    for min_df in (2, 1):  # 1: a corpus so small that no word occurs in two texts
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=min_df)
        try:
            features = vectorizer.fit_transform(train_texts)
            break
        except ValueError:
            continue
    else:
        return {"model": NAME, "skipped": "no word of two or more letters in the training texts"}
    classifier = LinearSVC(C=1.0).fit(features, y_train)
    y_pred = classifier.predict(vectorizer.transform(test_texts))
    report = classification_report(np.asarray(y_test), y_pred, labels)
    out = {"model": NAME, "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
           "seconds": round(time.process_time() - started, 2), "trained_on": "the training split"}
    return {**out, "y_pred": y_pred} if predictions else out
