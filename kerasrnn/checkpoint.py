"""Resumable training: an epoch-end checkpoint that survives SIGKILL.

While a run trains, its files live in `<parent>/.<name>.partial/`. After every completed epoch the
callback writes, each by temporary name + rename: the weights (with optimizer state) as
`last-<epoch>.weights.h5`, the best weights so far as `best-<epoch>.weights.h5` when they change, and
last state.json (epochs done, history rows, early-stopping counters, and the names of those two
files); then it removes the files state.json no longer names. State.json is the commit point: a kill
at any instant leaves a state.json whose files are the ones of the epoch it counts (with one fixed
name per file, a kill between the weights' rename and state.json's paired one epoch's weights with
the previous epoch's count, and the resumed run trained that epoch twice). Re-running the same
command with the same --output (or `--resume DIR`) loads them and continues with the next epoch: no
completed epoch is lost or repeated. When training finishes, the run folder is renamed into place in
one step and the checkpoint files are removed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from kerasrnn.errors import UserError
from kerasrnn.fileio import write_json_atomic
from kerasrnn.options import MODEL_KEYS

STATE = "state.json"
LAST_WEIGHTS = "last.weights.h5"  # the fixed names of checkpoints written before state.json named its files
BEST_WEIGHTS = "best.weights.h5"
# Options that must match to resume: anything that changes the data split, vocabulary or model.
# The model's are options.MODEL_KEYS. A key added later needs its "off" value in ADDED_LATER, so that
# a run interrupted before it existed still resumes.
RESUME_KEYS = ("data", "text_column", "label_column", "test_data", "val_split", "test_split", "vocab_size",
               "min_count", "max_len", *MODEL_KEYS, "linear_solver", "batch_size", "learning_rate", "lr_schedule", "clipnorm", "class_weight",
               "seed", "split_seed", "epochs", "patience", "backend", "stream", "vocab", "distribute", "replicas")

ADDED_LATER = {"bidirectional": False, "lr_schedule": "constant", "clipnorm": 0.0, "bag_dim": 0, "min_count": 1,
               "linear": "none", "bigrams": 0, "linear_solver": "fit", "vocab": None,
                "distribute": "none", "replicas": 2}


def _resume_value(config: dict, key: str, missing=None):
    """An option's value as far as resuming goes: --bigrams and --linear-solver mean nothing without
    the linear path."""
    if key in ("bigrams", "linear_solver") and config.get("linear", ADDED_LATER["linear"]) == "none":
        return {"bigrams": 0, "linear_solver": None}[key]
    return config.get(key, missing)


def weights_file(partial: Path, state: dict | None, kind: str) -> Path:
    """The "last" or "best" weights file that `state` (state.json) names; the fixed name for a
    checkpoint written before state.json named its files."""
    name = ((state or {}).get("weights") or {}).get(kind) or {"last": LAST_WEIGHTS, "best": BEST_WEIGHTS}[kind]
    return partial / name


def partial_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.partial"


def _save_weights_atomic(model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.weights.h5")  # Keras wants the .weights.h5 suffix
    model.save_weights(tmp)
    os.replace(tmp, path)


def load_state(partial: Path, config: dict) -> dict | None:
    """The saved state of an interrupted run, after checking its options match this command's."""
    file = partial / STATE
    if not file.is_file():
        return None
    state = json.loads(file.read_text(encoding="utf-8"))
    saved = state.get("config", {})
    # A run interrupted before an option existed ran with what is now its default.
    differ = [k for k in RESUME_KEYS if _resume_value(saved, k, ADDED_LATER.get(k)) != _resume_value(config, k)]
    if "linear" in differ:  # the options of the linear path go with it
        differ = [k for k in differ if k not in ("bigrams", "linear_solver")]
    if differ:
        was = " ".join(f"--{k.replace('_', '-')} {_resume_value(saved, k, ADDED_LATER.get(k))}" for k in differ)
        raise UserError(f"{partial}: the interrupted run used other options ({', '.join(differ)}); "
                        f"resume with the same options ({was}) or choose another --output")
    return state


def epoch_checkpoint(partial: Path, config: dict, early_stopping, state: dict | None, write: bool = True):
    """The callback that saves after each epoch and restores early-stopping state on resume (Keras
    resets it at train begin). Built on demand: this module is imported before the input is checked,
    and a bad-input error should not wait for Keras and TensorFlow to load.
    `write=False` (multi-worker, not the chief): keep the history, write nothing."""
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        def __init__(self, partial: Path, config: dict, early_stopping, state: dict | None):
            super().__init__()
            self.partial, self.config, self.early_stopping = partial, config, early_stopping
            self.state = state or {"epochs_done": 0, "history": [], "early_stopping": None, "stopped": False}

        def on_train_begin(self, logs=None):
            es = self.state["early_stopping"]
            if es:
                best = None
                best_file = weights_file(self.partial, self.state, "best")
                if best_file.is_file():
                    # The file holds the optimizer's state too: put back the last epoch's, not
                    # only its model weights, or training resumes with the best epoch's Adam moments.
                    optimizer = self.model.optimizer.variables if self.model.optimizer is not None else []
                    current, current_optimizer = self.model.get_weights(), [v.numpy() for v in optimizer]
                    self.model.load_weights(best_file)
                    best = self.model.get_weights()
                    self.model.set_weights(current)
                    for variable, value in zip(optimizer, current_optimizer, strict=True):
                        variable.assign(value)
                self.early_stopping.load_state(es, best)

        def on_epoch_end(self, epoch, logs=None):
            es = self.early_stopping
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            self.state["history"].append(row)
            self.state["epochs_done"] = epoch + 1
            if not write:
                return
            files = dict(self.state.get("weights") or {})
            files["last"] = f"last-{epoch + 1}.weights.h5"
            _save_weights_atomic(self.model, self.partial / files["last"])
            if es.improved:  # some path's best so far: the file holds every path at its best epoch
                current = self.model.get_weights()
                self.model.set_weights(es.best_weights)
                files["best"] = f"best-{epoch + 1}.weights.h5"
                _save_weights_atomic(self.model, self.partial / files["best"])
                self.model.set_weights(current)
            self.state["weights"] = files
            self.state["early_stopping"] = es.state()
            self.state["stopped"] = bool(self.model.stop_training)
            self.state["config"] = {k: self.config.get(k) for k in RESUME_KEYS}
            write_json_atomic(self.partial / STATE, self.state)  # the commit point (module docstring)
            for stale in _weight_files(self.partial) - {self.partial / name for name in files.values()}:
                stale.unlink(missing_ok=True)

    return EpochCheckpoint(partial, config, early_stopping, state)


def restore(model, partial: Path, state: dict) -> None:
    """Load the last completed epoch's weights and optimizer state into a compiled model."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(weights_file(partial, state, "last"))


def _weight_files(partial: Path) -> set[Path]:
    """Every checkpoint weights file in `partial` (not the temporary ones being written)."""
    return {p for p in partial.glob("*.weights.h5") if not p.name.startswith(".")}


def finished(state: dict | None, epochs: int) -> bool:
    return bool(state) and (state["stopped"] or state["epochs_done"] >= epochs)


def clean(partial: Path) -> None:
    (partial / STATE).unlink(missing_ok=True)
    for path in _weight_files(partial) | set(partial.glob(".*.tmp.weights.h5")):  # a kill can leave a temporary
        path.unlink(missing_ok=True)
