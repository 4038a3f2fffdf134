"""Data-parallel training on JAX with Keras's distribution API (`--distribute` on the JAX backend).

- `--distribute mirrored`: one process, `keras.distribution.DataParallel` over its devices: every
  GPU, or on a CPU `--replicas` host devices (XLA's host device count, set before JAX starts).
- `--distribute multiworker`: one process per worker, joined by JAX's distributed runtime
  (`keras.distribution.initialize`: the coordinator is the first process of --workers or TF_CONFIG,
  kerasrnn.distribute.process_addresses; CPU collectives run over gloo), DataParallel over every
  device of every process. Process 0 is the chief: it alone writes.

`--batch-size` is the global batch. Each of N processes feeds batch_size / N rows of every step;
Keras assembles them into one global array (`jax.make_array_from_process_local_data`) and the
gradient is the global batch's, averaged by XLA's collectives. The global array needs every
process to feed the same shape at every step, so every batch is full (an epoch's last batch is
filled up with rows read again) and every worker feeds ceil(training texts / batch_size) batches per
epoch. What each worker reads:
- a streamed corpus: its own shards (kerasrnn.stream.worker_part), or with fewer shards than
  workers its own rows of each; batches at full max_len when N > 1 (a worker cannot see the others'
  texts to agree on a shorter cut);
- data in memory: every worker loads the file (the stratified split needs all of it) and feeds its
  slice of each global batch, cut to the global batch's width: the global batches are exactly a
  single process's (kerasrnn.batching.worker_batches).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from kerasrnn.errors import UserError


@dataclass
class Workers:
    """This process's place in a data-parallel run."""

    index: int            # 0 is the chief
    count: int            # processes
    devices: int          # devices of all processes together
    part: object = None   # the kerasrnn.stream.Corpus this worker reads (streamed data)
    epoch_ends: list = field(default_factory=list)  # perf_counter() at the end of each epoch (clock())

    def clock(self):
        """A Keras callback noting when each epoch ends: samples/s from the second epoch on leaves
        out the first epoch's compilation."""
        import keras

        ends = self.epoch_ends

        class EpochClock(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                ends.append(time.perf_counter())

        return EpochClock()


def configure_devices(config: dict) -> None:
    """Before JAX starts: --distribute mirrored without a GPU trains on --replicas host devices."""
    if config["distribute"] == "mirrored":
        flag = f"--xla_force_host_platform_device_count={config['replicas']}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()


def start(config: dict, tf_config: dict | None) -> Workers:
    """Join the other processes (multiworker) and train every model made from now on data-parallel."""
    import jax
    import keras

    from kerasrnn.distribute import process_addresses

    if tf_config is not None:
        addresses, index = process_addresses(tf_config)
        try:
            keras.distribution.initialize(addresses[0], num_processes=len(addresses), process_id=index)
        except Exception as exc:  # JAX raises plain RuntimeErrors for a coordinator it cannot reach
            raise UserError(f"--distribute multiworker: worker {index} could not join the coordinator {addresses[0]} "
                            f"({str(exc).splitlines()[0]}); start every worker with the same --workers") from None
    devices = jax.devices()
    if config["batch_size"] % len(devices):
        raise UserError(f"--batch-size {config['batch_size']} must be a multiple of the {len(devices)} devices "
                        f"training together (--batch-size is the global batch)")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False))
    workers = Workers(jax.process_index(), jax.process_count(), len(devices))
    print(f"distribute: JAX DataParallel, replicas: {workers.devices} in {workers.count} process(es); "
          f"worker {workers.index} feeds {config['batch_size'] // workers.count} rows of every batch of "
          f"{config['batch_size']}")
    return workers


def reduce_once_per_step(model) -> None:
    """Compute `model`'s loss per device (jax.shard_map) instead of over the global batch.

    Keras's DataParallel leaves the partitioning to XLA's SPMD partitioner, which all-reduces the
    SimpleRNN's weight gradients inside the backward loop: one collective per time step (seen in
    the compiled train step; XLA's CPU pipeline has no pass that moves them out). Between two
    processes each collective costs milliseconds (2.7-9 ms measured on this VM's loopback for 8
    floats), so a 34-token batch spent ~30 ms per step in them. Inside shard_map each device runs the
    whole loop on its rows, and autodiff sums the weight gradients once, where the replicated
    weights enter: two collectives per step (the gradients; the loss). The loss is the mean of the
    devices' means (their batches are the same size); the metrics Keras updates inside the loss
    (each output's loss, for a model with several) get the sum of the devices' updates, in the
    loss's all-reduce (the others are updated afterwards on the global predictions); each device
    draws its own dropout masks (its index folded into the seed).
    Tested against one device: the same losses and weights to float rounding."""
    import jax
    import keras
    from jax.sharding import PartitionSpec

    mesh = keras.distribution.distribution().device_mesh.backend_mesh
    axis = mesh.axis_names[0]
    rows, whole = PartitionSpec(axis), PartitionSpec()
    seeds = [i for i, v in enumerate(model.non_trainable_variables) if v.path.endswith("seed_generator_state")]
    per_device = model.compute_loss_and_updates

    def with_seed_offset(values, offset):
        values = list(values)
        for i in seeds:
            values[i] = values[i].at[0].add(offset.astype(values[i].dtype))
        return values

    def compute_loss_and_updates(trainable, non_trainable, metrics, x, y, sample_weight, training=False,
                                 optimizer_variables=None):
        def on_device(trainable, non_trainable, metrics, x, y, sample_weight, optimizer_variables):
            index = jax.lax.axis_index(axis)
            loss, (unscaled, y_pred, new_non_trainable, new_metrics) = per_device(
                trainable, with_seed_offset(non_trainable, index), metrics, x, y, sample_weight,
                training=training, optimizer_variables=optimizer_variables)
            new_metrics = [old + jax.lax.psum(new - old, axis) for old, new in zip(metrics, new_metrics)]
            return jax.lax.pmean(loss, axis), (jax.lax.pmean(unscaled, axis), y_pred,
                                               with_seed_offset(new_non_trainable, -index), new_metrics)

        # check_vma=False: the RNN's zero initial state is the same on every device and its carry is
        # not, which the check refuses; every output declared replicated here is equal on all devices.
        return jax.shard_map(on_device, mesh=mesh, in_specs=(whole, whole, whole, rows, rows, rows, whole),
                             out_specs=(whole, (whole, rows, whole, whole)), check_vma=False)(
            trainable, non_trainable, metrics, x, y, sample_weight, optimizer_variables)

    model.compute_loss_and_updates = compute_loss_and_updates


def fit_inputs(data, config: dict, workers: Workers, first_epoch: int, trim: str | None,
               class_weights: np.ndarray | None) -> dict:
    """model.fit's input arguments for this worker (kerasrnn.batching.fit_inputs' data-parallel twin)."""
    from kerasrnn.batching import epoch_seed, steps_per_epoch, trim_lengths, worker_batches

    batch, seed, epochs = config["batch_size"], config["seed"], config["epochs"]
    local, n_val = batch // workers.count, data.summary["validation"]
    steps, val_steps = steps_per_epoch(data.summary["train"], batch), steps_per_epoch(n_val, batch)
    fit = {"steps_per_epoch": steps}
    if n_val:
        fit["validation_steps"] = val_steps
    if not data.streamed:
        a, at = data.arrays, (workers.index, workers.count)
        weights = None if class_weights is None else class_weights[a.y_train]
        fit["x"] = worker_batches(a.x_train, a.y_train, batch, seed, weights, first_epoch, epochs, trim, *at)
        if n_val:
            fit["validation_data"] = worker_batches(a.x_val, a.y_val, batch, None, None, first_epoch, epochs, trim, *at)
        return fit
    part = workers.part = _checked_part(data.corpus, workers, local * steps, local * val_steps)
    index = {lab: i for i, lab in enumerate(data.labels)}
    lengths = trim_lengths(data.tokenizer.max_len, trim) if workers.count == 1 else None
    epoch_range = range(first_epoch, max(epochs, first_epoch + 1))

    def train_batches():
        for epoch in epoch_range:
            yield from part.batches("train", data.tokenizer, index, local, epoch_seed(seed, epoch), lengths,
                                    class_weights, steps=steps, first_file=epoch)

    def validation_batches():
        for _ in epoch_range:
            yield from part.batches("validation", data.tokenizer, index, local, None, lengths, steps=val_steps)

    fit["x"] = train_batches()
    if n_val:
        fit["validation_data"] = validation_batches()
    return fit


def _checked_part(corpus, workers: Workers, fed: int, fed_validation: int):
    """This worker's part of the corpus (kerasrnn.stream.worker_part), after checking every worker's
    part before training: an error raised in one worker during fit would leave the others waiting
    in a collective. Every worker computes every part from the same counts, so all refuse alike."""
    from kerasrnn.stream import worker_part

    parts = [worker_part(corpus, i, workers.count) for i in range(workers.count)]
    if parts[0].stride[1] > 1 or not corpus.split_counts:  # rows dealt out: every part holds 1/N of each split
        return parts[workers.index]
    for i, part in enumerate(parts):
        held = {s: sum(corpus.split_counts[str(f)].get(s, 0) for f in part.files) for s in ("train", "validation")}
        empty = [s for s in held if held[s] == 0 and (s == "train" or fed_validation)]
        if empty:
            raise UserError(f"{corpus.source}: worker {i}'s shards hold no {empty[0]} texts; give the corpus more shards "
                            "(or ones of more even size) or fewer workers")
        if i == workers.index and abs(held["train"] - fed) > 0.1 * fed:
            print(f"worker {i}: its shards hold {held['train']} training texts, and it feeds {fed} per epoch (shards of "
                  "uneven size: " + ("some are fed twice)" if held["train"] < fed else
                                     "each epoch leaves out the last rows of another shard)"))
    return parts[workers.index]


def leave(workers: Workers) -> None:
    """Every process leaves JAX's distributed runtime together, right after training, so that the
    chief's evaluation and writing afterwards (on its own, however long) do not keep the others
    waiting at exit, where JAX's shutdown gives up after a timeout."""
    if workers.count > 1:
        import jax

        jax.distributed.shutdown()


def finish(workers: Workers, data, config: dict) -> dict:
    """After model.fit, on every process: each worker's input work and speed, gathered to all; then
    the distribution is set aside, so that the chief evaluates and writes on its own."""
    import keras

    from kerasrnn.batching import steps_per_epoch

    ends, epochs_run = workers.epoch_ends, max(len(workers.epoch_ends), 1)
    local = config["batch_size"] // workers.count
    fed = steps_per_epoch(data.summary["train"], config["batch_size"]) * local
    read = workers.part.rows_read["train"] / epochs_run if workers.part is not None else fed
    files = len(workers.part.files) if workers.part is not None and workers.part.stride[1] == 1 else None
    # Training rows per second, validation included, from the end of the first epoch (no compiling).
    speed = fed * (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 else float("nan")
    mine = np.array([read, speed, files or 0], np.float64)
    every = mine[None]
    if workers.count > 1:
        from jax.experimental import multihost_utils

        every = np.asarray(multihost_utils.process_allgather(mine)).reshape(workers.count, -1)
    keras.distribution.set_distribution(None)
    per_worker = [{"worker": i, "training_rows_read_per_epoch": round(float(r), 1),
                   "samples_per_second": None if np.isnan(s) else round(float(s), 1),
                   **({"files": int(f)} if files is not None else {})} for i, (r, s, f) in enumerate(every)]
    what = "read from its part" if workers.part is not None else "fed (the data is in memory in every worker)"
    print(f"worker {workers.index}/{workers.count}: {read:.0f} of {data.summary['train']} training rows per epoch "
          f"{what}; {speed:.0f} samples/s after the first epoch")
    return {"backend": "jax", "processes": workers.count, "replicas": workers.devices,
            "rows_per_worker_batch": local, "workers": per_worker}
