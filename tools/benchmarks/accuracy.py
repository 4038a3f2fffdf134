"""Accuracy benchmark: the default configuration on each shared dataset, several seeds, side by side
with the simple alternatives a user would compare it with, trained in the same run on the same split:

- TF-IDF word 1-2 grams + LinearSVC (kerasrnn.baseline, the reference of ../shared/datasets/SOURCES.md);
- a masked word-average model (fastText-style: Embedding 64 -> mean over the real tokens -> Dense
  softmax) on the same token ids, trained by the same fit loop, early stopping and seed.

Accuracy and macro-F1 as mean ± sd over the seeds, and accuracy by text length (tokens per text).
`python tools/benchmark_accuracy.py [--datasets DIR] [--seeds 0,1,2] [--only NAME,...] [--out DIR]`
writes accuracy.json, accuracy.md and accuracy.png. Not part of the test suite (too slow); a smoke
test runs it on one dataset with one epoch.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

# name: (train file, test file or None for a stratified split of the file)
DATASETS = {
    "sms_spam": ("sms_spam.csv", None),
    "rotten_tomatoes": ("rotten_tomatoes_train.csv", "rotten_tomatoes_test.csv"),
    "reuters_r8": ("reuters_r8_train.csv", "reuters_r8_test.csv"),
    "20newsgroups": ("20newsgroups_train.csv", "20newsgroups_test.csv"),
}
LENGTH_BUCKETS = ((0, 50), (51, 100), (101, 200), (201, 400), (401, None))
MODELS = ("kerasrnn", "tfidf_linearsvc", "word_average")
WORD_AVERAGE_DIM = 64


def run(datasets_dir: Path, seeds: list[int], only: list[str] | None, out: Path, extra: dict | None = None,
        log=print) -> dict:
    from kerasrnn.options import DEFAULTS

    rows = {}
    for name, (train_file, test_file) in DATASETS.items():
        if only and name not in only:
            continue
        runs = []
        for seed in seeds:
            # One split for every seed (split seed 0); seeds vary the models.
            config = {**DEFAULTS, "data": str(datasets_dir / train_file), "seed": seed, "split_seed": 0,
                      "verbose": 0, **(extra or {})}
            if test_file:
                config.update(test_data=str(datasets_dir / test_file), test_split=0.0)
            runs.append(one_seed(config))
            log(f"{name} seed {seed}: " + "  ".join(
                f"{m} {runs[-1][m]['accuracy']:.4f}/{runs[-1][m]['macro_f1']:.4f}" for m in MODELS))
        rows[name] = summarize(runs)
    result = {"config": {k: v for k, v in {**DEFAULTS, **(extra or {})}.items() if k not in ("data", "output")},
              "seeds": seeds, "datasets": rows}
    write(result, out)
    return result


def one_seed(config: dict) -> dict:
    """Each model's accuracy, macro-F1, seconds and accuracy by length bucket on one seed."""
    from kerasrnn.baseline import linear_baseline
    from kerasrnn.metrics import classification_report
    from kerasrnn.prepare import prepare_data
    from kerasrnn.run import METRICS_FILE, RunInfo, read_json
    from kerasrnn.train import train

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_dir = train({**config, "output": str(Path(tmp) / "run")})
        seconds = time.perf_counter() - start
        info = RunInfo.load(run_dir)
        # The same split and ids again (prepare_data is deterministic in the split seed).
        data = prepare_data({**config, "max_len": info.tokenizer.max_len})
        a = data.arrays
        model = info.load_model()
        ours = model.predict(a.x_test, batch_size=256, verbose=0).argmax(1)
        chosen = read_json(run_dir / METRICS_FILE).get("paths")
        if chosen:  # what the recurrence adds: the linear path's own test accuracy beside the weight chosen
            from kerasrnn.model import path_outputs

            scores = path_outputs(model).predict(a.x_test, batch_size=256, verbose=0)
            chosen = {"rnn_weight": chosen["rnn_weight"], "temperature": chosen["temperature"],
                      "linear_path_accuracy": float((scores[:, :len(data.labels)].argmax(1) == a.y_test).mean())}
    lengths = (a.x_test != 0).sum(1) - 1  # tokens per text the models read (<START> not counted)
    start = time.process_time()
    tfidf = linear_baseline(a.train_texts, a.y_train, a.test_texts, a.y_test, data.labels, predictions=True)
    tfidf_seconds = time.process_time() - start
    start = time.perf_counter()
    average = word_average_predictions(data, config)
    average_seconds = time.perf_counter() - start
    out = {"seed": config["seed"], "test_texts": int(len(a.y_test)), "paths": chosen}
    for model, y_pred, secs in (("kerasrnn", ours, seconds), ("tfidf_linearsvc", tfidf["y_pred"], tfidf_seconds),
                                ("word_average", average, average_seconds)):
        report = classification_report(a.y_test, y_pred, data.labels)
        out[model] = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "seconds": secs,
                      "by_length": by_length(a.y_test, y_pred, lengths)}
    return out


def word_average_predictions(data, config: dict) -> np.ndarray:
    """Test predictions of the masked word-average model trained like ours (fit loop, early stopping,
    seed, learning rate, epochs) on the same ids."""
    import keras

    from kerasrnn.batching import numpy_batches, steps_per_epoch

    a = data.arrays
    keras.utils.set_random_seed(config["seed"])
    tokens = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(data.tokenizer.vocab_size, WORD_AVERAGE_DIM, mask_zero=True)(tokens)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(tokens, keras.layers.Dense(len(data.labels), activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]), loss="sparse_categorical_crossentropy")
    early = keras.callbacks.EarlyStopping(patience=config["patience"], restore_best_weights=True)
    batch = config["batch_size"]
    model.fit(numpy_batches(a.x_train, a.y_train, batch, config["seed"], None, 0, config["epochs"]),
              steps_per_epoch=steps_per_epoch(len(a.x_train), batch), epochs=config["epochs"],
              validation_data=(a.x_val, a.y_val), callbacks=[early], verbose=0)
    return model.predict(a.x_test, batch_size=256, verbose=0).argmax(1)


def by_length(y_true: np.ndarray, y_pred: np.ndarray, lengths: np.ndarray) -> dict:
    out = {}
    for low, high in LENGTH_BUCKETS:
        rows = (lengths >= low) & (lengths <= (high or np.inf))
        if rows.any():
            out[f"{low}-{high}" if high else f"{low}+"] = {"n": int(rows.sum()),
                                                          "accuracy": float((y_true[rows] == y_pred[rows]).mean())}
    return out


def summarize(runs: list[dict]) -> dict:
    """Mean and sd over the seeds of each model's figures, and each seed's figures."""
    out = {"runs": runs}
    for model in MODELS:
        row = {}
        for key in ("accuracy", "macro_f1", "seconds"):
            values = np.array([r[model][key] for r in runs])
            row[f"{key}_mean"] = float(values.mean())
            row[f"{key}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        buckets = runs[0][model]["by_length"]
        row["by_length"] = {b: {"n": buckets[b]["n"], "accuracy_mean": float(np.mean(
            [r[model]["by_length"][b]["accuracy"] for r in runs]))} for b in buckets}
        out[model] = row
    return out


def to_markdown(result: dict) -> str:
    names = {"kerasrnn": "kerasrnn default", "tfidf_linearsvc": "TF-IDF + LinearSVC", "word_average": "word average"}
    lines = ["| dataset | model | accuracy (mean ± sd) | macro-F1 (mean ± sd) | seconds |",
             "| --- | --- | --- | --- | ---: |"]
    for name, r in result["datasets"].items():
        for model in MODELS:
            m = r[model]
            lines.append(f"| {name} | {names[model]} | {m['accuracy_mean']:.4f} ± {m['accuracy_sd']:.4f} | "
                         f"{m['macro_f1_mean']:.4f} ± {m['macro_f1_sd']:.4f} | {m['seconds_mean']:.0f} |")
    lines += ["", "Accuracy by tokens per text (mean over seeds; n texts):", "",
              "| dataset | bucket | n | " + " | ".join(names[m] for m in MODELS) + " |",
              "| --- | --- | ---: | " + " | ".join("---:" for _ in MODELS) + " |"]
    for name, r in result["datasets"].items():
        for bucket, first in r["kerasrnn"]["by_length"].items():
            lines.append(f"| {name} | {bucket} | {first['n']} | " + " | ".join(
                f"{r[m]['by_length'][bucket]['accuracy_mean']:.4f}" for m in MODELS) + " |")
    lines += ["", "What the recurrence adds: the model's linear TF-IDF path alone on the test split, and the weight of",
              "the RNN's logits chosen on the validation split (kerasrnn.paths), per seed:", "",
              "| dataset | linear path alone | kerasrnn (both paths) | RNN weight per seed |", "| --- | ---: | ---: | --- |"]
    for name, r in result["datasets"].items():
        chosen = [run["paths"] for run in r["runs"] if run.get("paths")]
        if chosen:
            weights = ", ".join(f"{c['rnn_weight']:g}" for c in chosen)
            lines.append(f"| {name} | {np.mean([c['linear_path_accuracy'] for c in chosen]):.4f} | "
                         f"{r['kerasrnn']['accuracy_mean']:.4f} | {weights} |")
    return "\n".join(lines) + f"\n\nSeeds: {result['seeds']}; split seed 0 for every seed.\n"


def write(result: dict, out: Path) -> None:
    from kerasrnn.fileio import write_json_atomic, write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "accuracy.json", result)
    write_text_atomic(out / "accuracy.md", to_markdown(result))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["datasets"])
    pos = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for k, (model, label) in enumerate((("kerasrnn", "kerasrnn default"), ("tfidf_linearsvc", "TF-IDF + LinearSVC"),
                                        ("word_average", "word average"))):
        means = [result["datasets"][n][model]["accuracy_mean"] for n in names]
        sds = [result["datasets"][n][model]["accuracy_sd"] for n in names]
        ax.bar(pos + (k - 1) * 0.27, means, 0.27, yerr=sds, label=label)
    ax.set_xticks(pos, names)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.5, 1.0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=100)
    plt.close(fig)
