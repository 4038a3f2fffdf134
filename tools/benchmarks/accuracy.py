"""Accuracy benchmark: the default configuration on each shared dataset, several seeds, against
the TF-IDF + LinearSVC reference (../shared/datasets/SOURCES.md).

`python tools/benchmark_accuracy.py [--datasets DIR] [--seeds 0,1,2] [--only NAME,...] [--out DIR]`
writes accuracy.json, accuracy.md and accuracy.png. Not part of the test suite (too slow); a smoke
test runs it on one tiny dataset.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

# name: (train file, test file or None for a stratified 80/20 split, TF-IDF accuracy, TF-IDF macro-F1)
DATASETS = {
    "sms_spam": ("sms_spam.csv", None, 0.9907, 0.9793),
    "rotten_tomatoes": ("rotten_tomatoes_train.csv", "rotten_tomatoes_test.csv", 0.7738, 0.7636),
    "reuters_r8": ("reuters_r8_train.csv", "reuters_r8_test.csv", 0.9767, 0.9396),
    "20newsgroups": ("20newsgroups_train.csv", "20newsgroups_test.csv", 0.8579, 0.8508),
}


def run(datasets_dir: Path, seeds: list[int], only: list[str] | None, out: Path, extra: dict | None = None,
        log=print) -> dict:
    import tempfile

    from kerasrnn.options import DEFAULTS
    from kerasrnn.run import METRICS_FILE, read_json
    from kerasrnn.train import train

    rows = {}
    for name, (train_file, test_file, ref_acc, ref_f1) in DATASETS.items():
        if only and name not in only:
            continue
        runs = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                # One split for every seed (SMS: stratified 80/20, split seed 0); seeds vary the model.
                config = {**DEFAULTS, "data": str(datasets_dir / train_file), "seed": seed, "split_seed": 0,
                          "verbose": 0, "output": str(Path(tmp) / "run"), **(extra or {})}
                if test_file:
                    config.update(test_data=str(datasets_dir / test_file), test_split=0.0)
                start = time.perf_counter()
                run_dir = train(config)
                seconds = time.perf_counter() - start
                m = read_json(run_dir / METRICS_FILE)
            runs.append({"seed": seed, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "seconds": seconds})
            log(f"{name} seed {seed}: accuracy {m['accuracy']:.4f} macro-F1 {m['macro_f1']:.4f} ({seconds:.0f} s)")
        acc, f1 = np.array([r["accuracy"] for r in runs]), np.array([r["macro_f1"] for r in runs])
        rows[name] = {"runs": runs, "accuracy_mean": float(acc.mean()), "accuracy_sd": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                      "macro_f1_mean": float(f1.mean()), "macro_f1_sd": float(f1.std(ddof=1)) if len(f1) > 1 else 0.0,
                      "seconds_mean": float(np.mean([r["seconds"] for r in runs])),
                      "tfidf_accuracy": ref_acc, "tfidf_macro_f1": ref_f1}
    result = {"config": {k: v for k, v in {**DEFAULTS, **(extra or {})}.items() if k not in ("data", "output")},
              "seeds": seeds, "datasets": rows}
    write(result, out)
    return result


def to_markdown(result: dict) -> str:
    lines = ["| dataset | accuracy (mean ± sd) | macro-F1 (mean ± sd) | TF-IDF + LinearSVC acc / F1 | train time (s) |",
             "| --- | --- | --- | --- | ---: |"]
    for name, r in result["datasets"].items():
        lines.append(f"| {name} | {r['accuracy_mean']:.4f} ± {r['accuracy_sd']:.4f} | {r['macro_f1_mean']:.4f} ± "
                     f"{r['macro_f1_sd']:.4f} | {r['tfidf_accuracy']:.4f} / {r['tfidf_macro_f1']:.4f} | {r['seconds_mean']:.0f} |")
    return "\n".join(lines) + f"\n\nSeeds: {result['seeds']}.\n"


def write(result: dict, out: Path) -> None:
    from kerasrnn.fileio import write_json_atomic, write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "accuracy.json", result)
    write_text_atomic(out / "accuracy.md", to_markdown(result))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["datasets"])
    ours = [result["datasets"][n]["accuracy_mean"] for n in names]
    ref = [result["datasets"][n]["tfidf_accuracy"] for n in names]
    pos = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(pos - 0.2, ours, 0.4, label="kerasrnn default")
    ax.bar(pos + 0.2, ref, 0.4, label="TF-IDF + LinearSVC")
    ax.set_xticks(pos, names)
    ax.set_ylabel("test accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=100)
    plt.close(fig)
