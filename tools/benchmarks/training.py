"""Training throughput: Keras model.fit as kerasrnn.train runs it, against a PyTorch nn.RNN reference.

`bench_training` runs each trainer in its own process pinned to one core (tools/bench.py);
`gpu_training_bench` runs Keras (KERAS_BACKEND, JAX on a GPU host) and PyTorch side by side on one
device (tools/train_gpu.py). The PyTorch model (torch_reference) is trained as ours is: same sizes,
same pooling, padding skipped by packing.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.torch_reference import torch_reference

TOOLS = Path(__file__).resolve().parent.parent  # holds this package: what a child process imports it from
REPO = TOOLS.parent


def _epoch_timer():
    """A Keras callback collecting each epoch's wall time in `.times`."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._start)

    return EpochTimer()


TRAINERS = {"Keras on JAX (kerasrnn.train default)": "jax", "Keras on TensorFlow": "tensorflow",
            "PyTorch nn.RNN, packed (reference)": "torch"}


def bench_training(config, x, y, epochs: int, batch: int, log) -> dict:
    """Training samples/s of each trainer on the same ids, sizes, pooling, batches and epochs.

    Each runs in its own process pinned to one core: the Keras backend is fixed at import, and
    pinning gives every framework the same single core, worker threads included (tf.data, XLA).
    """
    import subprocess
    import sys

    out = {"examples": int(len(x)), "epochs": epochs, "batch_size": batch, "pooling": config["pooling"],
           "mean_real_tokens": float((x != 0).sum(1).mean()), "trainers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        np.save(Path(tmp) / "y.npy", np.asarray(y, np.int32))
        (Path(tmp) / "job.json").write_text(json.dumps({"config": config, "epochs": epochs, "batch": batch}))
        for name, trainer in TRAINERS.items():
            path = os.pathsep.join([str(TOOLS), str(REPO), os.environ.get("PYTHONPATH", "")])
            env = {**os.environ, "PYTHONPATH": path,
                   "CUDA_VISIBLE_DEVICES": "-1", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2",
                   "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
            if trainer != "torch":
                env["KERAS_BACKEND"] = trainer
            proc = subprocess.run([sys.executable, "-c", "import sys; from benchmarks.training import training_child; "
                                   "training_child(sys.argv[1], sys.argv[2])", tmp, trainer],
                                  env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                missing = "No module named 'torch'" in proc.stderr
                row = {"error": "not installed (pip install torch==2.13.0)" if missing else proc.stderr.strip()[-500:]}
                log(f"  {name}: {row['error'][:200]}")
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                log(f"  {name:40} {row['samples_per_s']:8.0f} samples/s (epochs {row['epoch_seconds']} s)")
            out["trainers"][name] = row
    rates = {k: v.get("samples_per_s") for k, v in out["trainers"].items()}
    ref = rates["PyTorch nn.RNN, packed (reference)"]
    if ref:
        out["ratios"] = {f"{k} / PyTorch": v / ref for k, v in rates.items() if v and "PyTorch" not in k}
    return out


def training_child(folder: str, trainer: str) -> None:
    """One trainer's measurement (run by bench_training in a fresh process); prints one JSON line."""
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[0]})
    job = json.loads((Path(folder) / "job.json").read_text())
    x, y = np.load(Path(folder) / "x.npy"), np.load(Path(folder) / "y.npy")
    config, epochs, batch = job["config"], job["epochs"], job["batch"]
    if trainer == "torch":
        import torch

        row = torch_reference(torch, x, y, config, epochs, batch)
        row = {"samples_per_s": row.pop("torch_samples_per_s"), "epoch_seconds": row.pop("torch_epoch_seconds"),
               "version": row["torch_version"]}
    else:
        row = _keras_fit_rate(config, x, y, epochs, batch)
    print(json.dumps({**row, "threads": "1 core (sched_setaffinity)"}))


def _keras_fit_rate(config, x, y, epochs, batch) -> dict:
    """model.fit as kerasrnn.train runs it on this backend (tf.data under TensorFlow, numpy batches
    under JAX; batches cut to their texts' length)."""
    import keras

    from kerasrnn.batching import steps_per_epoch, training_input, trim_for_backend
    from kerasrnn.model import build_model, model_kwargs

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    trim = trim_for_backend(keras.backend.backend())
    # The recurrence alone, as the PyTorch reference has it: the linear TF-IDF path is not compared.
    model = build_model(**{**model_kwargs(config), "max_len": None if trim else x.shape[1], "linear": "none"})
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    timer = _epoch_timer()
    ds = training_input(x, y, batch, 0, None, 0, epochs, trim)
    model.fit(ds, epochs=epochs, steps_per_epoch=steps_per_epoch(len(x), batch), callbacks=[timer], verbose=0)
    steady = timer.times[1:] or timer.times  # the first epoch includes tracing / compilation
    return {"samples_per_s": float(len(x) / np.median(steady)), "epoch_seconds": [round(t, 3) for t in timer.times],
            "version": keras.__version__, "backend": keras.backend.backend(), "trimmed_batches": trim}


def gpu_training_bench(vocab: int, max_len: int, embed: int, units: int, batches: list[int], examples: int,
                       epochs: int, poolings: tuple[str, ...] = ("max",), log=print) -> dict:
    """Keras (whatever KERAS_BACKEND is, JAX on a GPU host) vs PyTorch nn.RNN with packed sequences,
    on the same synthetic ids (variable lengths, post-padded), same sizes, same device.

    Needs no TensorFlow: Keras gets numpy arrays, not a tf.data pipeline.
    """
    import keras

    from kerasrnn.model import build_model

    rng = np.random.default_rng(0)
    lengths = rng.integers(max(2, max_len // 8), max_len + 1, examples)
    x = np.zeros((examples, max_len), np.int32)
    for i, n in enumerate(lengths):
        x[i, 0] = 1
        x[i, 1:n] = rng.integers(3, vocab, n - 1)
    y = rng.integers(0, 2, examples).astype(np.int32)
    config = {"vocab_size": vocab, "num_classes": 2, "max_len": max_len, "embed_dim": embed, "units": units,
              "num_layers": 1, "dropout": 0.0}
    result = {"backend": keras.backend.backend(), "config": config, "examples": examples, "epochs": epochs,
              "device": _device_name(), "runs": []}
    for pooling, batch in [(p, b) for p in poolings for b in batches]:
        config["pooling"] = pooling
        model = build_model(**config)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        timer = _epoch_timer()
        model.fit(x, y, batch_size=batch, epochs=epochs, callbacks=[timer], verbose=0)
        row = {"batch_size": batch, "pooling": pooling,
               "keras_samples_per_s": float(examples / np.median(timer.times[1:] or timer.times)),
               "keras_epoch_seconds": [round(t, 3) for t in timer.times]}
        try:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
            row.update(torch_reference(torch, x, y, config, epochs, batch, device))
            row["ratio"] = row["keras_samples_per_s"] / row["torch_samples_per_s"]
        except ImportError:
            row["torch"] = "not installed"
        log(json.dumps(row))
        result["runs"].append(row)
    return result


def _device_name() -> str:
    try:
        import jax

        return str(jax.devices()[0].device_kind)
    except Exception:  # noqa: BLE001 - best effort description only
        return platform.processor() or "cpu"
