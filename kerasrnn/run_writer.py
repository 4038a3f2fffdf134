"""Writing a run folder (what kerasrnn.run reads): the model, vocabulary, labels, config.json,
metrics, history, plots and model card, written into the partial folder and renamed into place in
one step, so a run folder is either complete or absent."""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def versions() -> dict:
    import keras

    out = {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__,
           "backend": keras.backend.backend()}
    for name in ("tensorflow", "jax", "torch"):
        if name in sys.modules:
            out[name] = getattr(sys.modules[name], "__version__", "?")
    return out


def test_split_line(text: str, label: str) -> str:
    """One line of the run's test split file (test_split.jsonl)."""
    return json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n"


def history_csv(history_rows: list[dict]) -> str:
    keys = [k for k in (history_rows[0] if history_rows else {}) if k != "epoch"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for row in history_rows:
        writer.writerow([row["epoch"], *(f"{row[k]:.6f}" for k in keys)])
    return buf.getvalue()


def write_run(out_dir: Path, partial: Path, model, config: dict, model_config: dict, data, report: dict,
              history_rows: list[dict], train_seconds: float) -> None:
    """Write every run file into the partial folder (which already holds the test split), then
    rename it into place. `data` is the kerasrnn.prepare.Prepared the model was trained on."""
    from kerasrnn import checkpoint
    from kerasrnn import run as R
    from kerasrnn.fileio import write_json_atomic, write_text_atomic
    from kerasrnn.plots import plot_confusion, plot_history
    from kerasrnn.report import model_card

    tokenizer, labels, summary = data.tokenizer, data.labels, data.summary
    model.save(partial / R.MODEL_FILE)
    tokenizer.save_vocab(partial / R.VOCAB_FILE)
    write_text_atomic(partial / R.LABELS_FILE, "\n".join(labels) + "\n")
    baseline_seconds = report.pop("linear_baseline_cpu_seconds", None)  # a timing: config.json, not metrics
    # config.json: the options as run (old runs and the exporters read these names), then the
    # model's arguments, labels, tokenizer and what happened.
    full_config = {
        **{k: v for k, v in config.items() if k != "output"},
        "data": summary["source"],
        **model_config,
        "labels": labels,
        "tokenizer": tokenizer.spec(),
        "data_summary": {k: v for k, v in summary.items() if k != "source"},
        "training": {"epochs_run": len(history_rows), "seconds": round(train_seconds, 2),
                     "linear_baseline_cpu_seconds": baseline_seconds,
                     "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        "versions": versions(),
    }
    write_json_atomic(partial / R.CONFIG_FILE, full_config)
    write_json_atomic(partial / R.METRICS_FILE, report)
    write_text_atomic(partial / "history.csv", history_csv(history_rows))
    keys = [k for k in (history_rows[0] if history_rows else {}) if k != "epoch"]
    plot_history({k: [row[k] for row in history_rows] for k in keys}, partial / "training_curves.png")
    plot_confusion(np.array(report["confusion_matrix"]["rows_true_cols_predicted"]), labels,
                   partial / "confusion_matrix.png")
    write_text_atomic(partial / "README.md", model_card(out_dir, full_config, report))
    checkpoint.clean(partial)
    if out_dir.exists():
        out_dir.rmdir()  # empty (checked before training)
    os.replace(partial, out_dir)
    if out_dir.parent.name == "runs" or config["output"] is None:
        write_text_atomic(out_dir.parent / R.LATEST, out_dir.name + "\n")
