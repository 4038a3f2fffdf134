"""Training on several devices or machines: the cluster settings both backends share, and the
tf.distribute path (`--backend tensorflow`; JAX's is kerasrnn.data_parallel).

- `--distribute mirrored`: every GPU of this host (or `--replicas` logical CPUs).
- `--distribute multiworker`: one process per worker, named in TF_CONFIG or in `--workers
  host:port,...` with `--task-index` (which build TF_CONFIG). Worker 0 (or the task of type
  'chief') is the chief: it alone writes checkpoints, the run folder and metrics.

`--batch-size` is the global batch in every mode: each of N replicas computes 1/N of it and the
gradients are averaged, so one command gives the same model on any number of workers.
Two Keras 3.15 bugs under MultiWorkerMirroredStrategy are worked around here (see each function).
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from kerasrnn.errors import UserError


def tf_config_for(config: dict) -> dict:
    """TF_CONFIG for --distribute multiworker: from --workers/--task-index, else the environment."""
    if config["workers"]:
        workers = [w.strip() for w in config["workers"].split(",") if w.strip()]
        bad = [w for w in workers if not re.fullmatch(r"[^:\s]+:\d+", w)]
        if bad:
            raise UserError(f"--workers: {bad[0]!r} is not host:port; give every worker as host:port, comma-separated")
        index = config["task_index"]
        if index is None or not 0 <= index < len(workers):
            raise UserError(f"--task-index must be 0..{len(workers) - 1} (this worker's place in --workers)")
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        os.environ["TF_CONFIG"] = json.dumps(tf_config)
        return tf_config
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise UserError("--distribute multiworker needs --workers host:port,... and --task-index, or TF_CONFIG")
    try:
        tf_config = json.loads(raw)
        tf_config["cluster"], tf_config["task"]["type"], tf_config["task"]["index"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"TF_CONFIG is not valid ({exc}); it needs cluster and task.type / task.index") from None
    return tf_config


def is_chief(tf_config: dict | None) -> bool:
    """The process that writes: the 'chief' task if the cluster has one, else worker 0."""
    if not tf_config:
        return True
    task = tf_config["task"]
    if "chief" in tf_config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and int(task["index"]) == 0


def process_addresses(tf_config: dict) -> tuple[list[str], int]:
    """Every process of the cluster in order (the chief first, then the workers) and this one's place
    in it: JAX's distributed runtime numbers its processes from 0 and coordinates from process 0."""
    cluster, task = tf_config["cluster"], tf_config["task"]
    chiefs = list(cluster.get("chief", []))
    if task["type"] not in ("chief", "worker"):
        raise UserError(f"TF_CONFIG: task type {task['type']!r} has no place in data-parallel training; "
                        "use 'chief' and 'worker' tasks")
    index = int(task["index"]) + (len(chiefs) if task["type"] == "worker" else 0)
    return chiefs + list(cluster.get("worker", [])), index


def strategy_for(config: dict):
    """The tf.distribute strategy of --distribute on the TensorFlow backend, or None."""
    import keras

    if config["distribute"] == "none" or keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if config["distribute"] == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * config["replicas"])
    except RuntimeError:
        pass  # already initialised (e.g. a second run in one process): use what exists
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)



def shard_by_data(ds):
    """Multi-worker: every worker reads the same stream and keeps its share of each global batch
    (sharding by file cannot apply to a generator or to in-memory arrays)."""
    import tensorflow as tf

    if not isinstance(ds, tf.data.Dataset):
        return ds
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def prepare_model(model, width: int | None, weighted: bool) -> None:
    """Build model, loss and metrics from a dummy batch before fit under a tf.distribute strategy.

    Keras 3.15's fit first reads one distributed batch and reduces it across replicas only to learn
    its shapes: under MultiWorkerMirroredStrategy that eager reduce fails (PerReplica cannot be
    converted; keras-team/keras#20585), and under MirroredStrategy the batch it read is lost. A
    dummy batch of the same shapes builds the same state; fit's own attempt is then skipped.
    """
    batch = (np.zeros((2, width or 8), np.int32), np.zeros((2,), np.int32))
    if weighted:
        batch += (np.ones((2,), np.float32),)
    model._maybe_symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    _patch_metric_reduction()


def _patch_metric_reduction() -> None:
    """Keras 3.15 averages each step's logged loss and metrics across workers with
    strategy.reduce("MEAN", v, axis=0), which fails on their scalar values ("Invalid reduction
    dimension 0 for input with 0 dimensions"). Scalars are reduced with axis=None instead."""
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer.reduce_per_replica, "kerasrnn_patched", False):
        return
    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            import tensorflow as tf

            def mean(v):
                rank = v.values[0].shape.rank if hasattr(v, "values") else v.shape.rank
                return strategy.reduce("MEAN", v, axis=None if rank == 0 else 0)

            return tf.nest.map_structure(mean, values)
        return original(values, strategy, reduction)

    reduce_per_replica.kerasrnn_patched = True
    trainer.reduce_per_replica = reduce_per_replica


