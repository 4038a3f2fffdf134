"""Which Keras backend a process runs on. Keras reads KERAS_BACKEND once, at import, so the choice
is made here before anything imports Keras.

Training defaults to JAX when it is installed: the same model.fit, with the same tf.data input, ran
3.0x faster per step than under TensorFlow on the default SMS model (5.5 vs 17 ms per batch of 32,
2-core CPU; tools/bench.py measures it). Exports always run under TensorFlow: a .keras file saved
under JAX reloads there with the same weights.
"""
from __future__ import annotations

import importlib.util
import os
import sys

from kerasrnn.errors import UserError

BACKENDS = ("tensorflow", "jax", "torch")


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def use(name: str, what: str) -> None:
    """Make this process's Keras run on `name`, or say why it cannot (Keras already imported)."""
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != name:
            raise UserError(f"{what} needs Keras on {name}, but this process already runs Keras on {current}; "
                            "run it in a new process")
        return
    os.environ["KERAS_BACKEND"] = name


def _machine_has_gpu() -> bool:
    """A cheap look for an NVIDIA GPU, so that a CPU machine decides without importing anything
    (a bad-input error must not wait seconds for TensorFlow to load)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("-1", ""):
        return False
    gpus = "/proc/driver/nvidia/gpus"
    return os.path.isdir(gpus) and bool(os.listdir(gpus))


def _jax_has_gpu() -> bool:
    import jax

    return jax.default_backend() == "gpu"


def _tensorflow_has_gpu() -> bool:
    if not installed("tensorflow"):
        return False
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def choose_training_backend(requested: str, distribute: str) -> str:
    """`--backend auto`: KERAS_BACKEND if the user set it; else JAX when it is installed (unless only
    TensorFlow can see a GPU); else tensorflow. --distribute runs on JAX or TensorFlow."""
    if requested == "auto":
        if "keras" in sys.modules:
            return sys.modules["keras"].backend.backend()
        requested = os.environ.get("KERAS_BACKEND", "")
        if not requested:
            if not installed("jax"):
                return "tensorflow"
            # No probe under --distribute: JAX must not start before it joins the other processes.
            if distribute != "none" or not _machine_has_gpu():
                return "jax"
            return "jax" if _jax_has_gpu() or not _tensorflow_has_gpu() else "tensorflow"
    if requested not in BACKENDS:
        raise UserError(f"backend {requested!r} (from --backend or KERAS_BACKEND) is not one of {', '.join(BACKENDS)}")
    if distribute != "none" and requested not in ("jax", "tensorflow"):
        raise UserError(f"--distribute {distribute} runs on JAX (Keras's distribution API) or TensorFlow "
                        f"(tf.distribute): use --backend jax, tensorflow or auto, not {requested}")
    if not installed(requested):
        raise UserError(f"--backend {requested}: the {requested} package is not installed; "
                        f"pip install {'jax[cpu]' if requested == 'jax' else requested} or choose another backend")
    return requested
