#!/usr/bin/env python
"""Scaling out, measured on one machine: python tools/bench_scaling.py [--data FILE] [--batch-sizes 32,256]

Cuts --data (default: the packaged SMS file) into --shards shards, makes the vocabulary file once
(python -m kerasrnn.vocab), then trains the same command, for each global batch size b:
  one process          JAX, batch b (what a user without a cluster runs)
  one process, 1 core  JAX pinned to core 0, batch b/2 (what each of two workers computes)
  two workers          JAX, two processes over loopback, global batch b (they share the cores)
Reported per run: training step time (Keras's ms/step, median over the epochs after the first),
samples/s, training rows each worker read per epoch, test accuracy. Then the collective alone:
two processes all-reduce an array of the model's gradient size (jit, blocking), median latency.
Projection for two machines, each worker with one core as above and the same collective cost:
b / (one-core step at b/2 + 2 all-reduces), as a train step holds two (kerasrnn.data_parallel),
and a coarser one for N machines (its assumptions are printed with it). Projections, not
measurements. Writes OUT/scaling.json and OUT/scaling.md.
"""
import argparse
import csv
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from kerasrnn.errors import UserError, cli_main  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pinned(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []


def _train(args: list[str], out: Path, core: int | None = None, workers: int = 1) -> list[str]:
    """Run kerasrnn.train (as `workers` processes over loopback); the chief's stdout, every worker's."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    base = [sys.executable, "-m", "kerasrnn.train", *args, "--output", str(out), "--verbose", "2"]
    if workers == 1:
        cmds = [_pinned(core) + base]
    else:
        hosts = ",".join(f"127.0.0.1:{_free_port()}" for _ in range(workers))
        # Not pinned: one core per worker was 5-10x slower here (XLA's threads and the collective's
        # wait share it); the workers share every core.
        cmds = [base + ["--distribute", "multiworker", "--workers", hosts, "--task-index", str(i)]
                for i in range(workers)]
    logs = [(out.parent / f"{out.name}.w{i}.out", out.parent / f"{out.name}.w{i}.err") for i in range(len(cmds))]
    procs = []
    for cmd, (stdout, stderr) in zip(cmds, logs):  # files, not pipes: a full pipe would stop a worker
        with open(stdout, "w") as o, open(stderr, "w") as e:
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=o, stderr=e, text=True))
    for p, (_, stderr) in zip(procs, logs):
        if p.wait(timeout=3600) != 0:
            raise SystemExit(f"training failed ({' '.join(p.args)}):\n{stderr.read_text()[-3000:]}")
    return [stdout.read_text() for stdout, _ in logs]


def _step_ms(stdout: str) -> float:
    """Median of Keras's per-epoch ms/step after the first epoch (which compiles)."""
    steps = [float(m) for m in re.findall(r"- (\d+(?:\.\d+)?)ms/step", stdout)]
    steps += [1000 * float(m) for m in re.findall(r"- (\d+(?:\.\d+)?)s/step", stdout)]
    return statistics.median(steps[1:] or steps)


def _shards(data: str | None, folder: Path, n: int) -> str:
    from kerasrnn.data import load_dataset

    dataset = load_dataset(data)
    rows = list(zip(dataset.texts, dataset.labels))
    folder.mkdir(parents=True)
    for k in range(n):
        with open(folder / f"part-{k:02d}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(rows[k::n])
    return str(folder / "part-*.csv")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/bench_scaling.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="labelled text file to cut into shards (default: the packaged SMS data)")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--batch-sizes", default="32,256", help="global batch sizes, comma-separated (even numbers)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is left out of the timing)")
    p.add_argument("--seeds", default="0", help="seeds, comma-separated: each run is repeated per seed (the one-core "
                                                "run, which only feeds the projection, with the first)")
    p.add_argument("--train-args", default="", help="more kerasrnn.train options for every run, e.g. '--units 32'")
    p.add_argument("--out", default="bench_scaling")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        raise UserError(f"{out}: already exists; choose another --out (nothing is overwritten)")
    work = out / "work"
    pattern = _shards(args.data, work / "shards", args.shards)
    vocab = work / "vocab.json"
    from kerasrnn.vocab import VOCAB_KEYS

    train_args = args.train_args.split()  # the options the vocabulary depends on go to its step too
    flags = {f"--{k.replace('_', '-')}" for k in VOCAB_KEYS}
    vocab_args = [x for i, x in enumerate(train_args) if x in flags or (i > 0 and train_args[i - 1] in flags)]
    subprocess.run([sys.executable, "-m", "kerasrnn.vocab", "--data", pattern, "--output", str(vocab), *vocab_args],
                   cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    common = ["--data", pattern, "--vocab", str(vocab), "--epochs", str(args.epochs), "--patience",
              str(args.epochs), *train_args]
    results = {"machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version()},
               "command": " ".join(["python tools/bench_scaling.py", *(argv if argv is not None else sys.argv[1:])]),
               "runs": []}
    seeds = [int(x) for x in args.seeds.split(",")]
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        runs = {
            "one process": (["--batch-size", str(batch)], None, 1),
            "one process, 1 core, b/2": (["--batch-size", str(batch // 2)], 0, 1),
            "two workers": (["--batch-size", str(batch)], None, 2),
        }
        for seed, (name, (extra, core, workers)) in ((seed, run) for seed in seeds for run in runs.items()):
            if core is not None and seed != seeds[0]:
                continue
            run_dir = work / f"b{batch}-{len(results['runs'])}"
            stdout = _train(common + extra + ["--seed", str(seed)], run_dir, core, workers)[0]
            config = json.loads((run_dir / "config.json").read_text())
            metrics = json.loads((run_dir / "metrics.json").read_text())
            rows_batch = int(extra[1])
            from kerasrnn.run import RunInfo

            parameters = results["runs"][0]["parameters"] if results["runs"] else int(
                sum(math.prod(w.shape) for w in RunInfo.load(run_dir).load_model().trainable_weights))
            step = _step_ms(stdout)
            row = {"run": name, "seed": seed, "global_batch": batch, "rows_per_step_per_worker": rows_batch // workers,
                   "step_ms": step, "samples_per_second": round(rows_batch / step * 1000),
                   "accuracy": metrics["accuracy"], "training_rows": config["data_summary"]["train"],
                   "parameters": parameters}
            if "data_parallel" in config:
                row["rows_read_per_worker_per_epoch"] = [w["training_rows_read_per_epoch"]
                                                         for w in config["data_parallel"]["workers"]]
            results["runs"].append(row)
            print(json.dumps(row), flush=True)
    params = results["runs"][0]["parameters"]
    results["gradient_floats"], results["allreduce_ms"] = params, _allreduce_ms(params)
    (out / "scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "scaling.md").write_text(_markdown(results))
    print(f"wrote {out}/scaling.json, {out}/scaling.md")
    return 0


def _markdown(results: dict) -> str:
    lines = [f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores. Command: "
             f"`{results['command']}`.", "",
             "| global batch | run | seed | rows per step per worker | step (ms) | samples/s | training rows read per "
             "worker per epoch | test accuracy |", "| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for r in results["runs"]:
        read = " / ".join(f"{x:.0f}" for x in r.get("rows_read_per_worker_per_epoch", [])) or f"{r['training_rows']} (all)"
        lines.append(f"| {r['global_batch']} | {r['run']} | {r['seed']} | {r['rows_per_step_per_worker']} | "
                     f"{r['step_ms']:.0f} | {r['samples_per_second']} | {read} | {r['accuracy']:.4f} |")
    groups = {}
    for r in results["runs"]:
        groups.setdefault((r["global_batch"], r["run"]), []).append(r["accuracy"])
    lines += ["", "| global batch | run | seeds | test accuracy, mean ± sd |", "| ---: | --- | ---: | ---: |"]
    for (batch, name), acc in groups.items():
        spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
        lines.append(f"| {batch} | {name} | {len(acc)} | {statistics.mean(acc):.4f} ± {spread:.4f} |")
    lines += ["", f"One all-reduce of {results['gradient_floats']:,} floats between two processes: "
              f"{results['allreduce_ms']:.2f} ms (median of 200, blocking).", "",
              "| global batch | comm per step (ms, 2 all-reduces) | one process samples/s | "
              "two machines, projected samples/s | projected speed-up |", "| ---: | ---: | ---: | ---: | ---: |"]
    by_batch = {}
    for r in results["runs"]:
        by_batch.setdefault(r["global_batch"], {}).setdefault(r["run"], r)  # the first seed's
    for batch, runs in by_batch.items():
        one, core = runs["one process"], runs["one process, 1 core, b/2"]
        comm = 2 * results["allreduce_ms"]
        projected = batch / (core["step_ms"] + comm) * 1000
        lines.append(f"| {batch} | {comm:.1f} | {one['samples_per_second']} | {projected:.0f} | "
                     f"{projected / one['samples_per_second']:.2f}x |")
    lines += ["", "N machines, a coarser projection: a worker's step shrinks with its rows (one-core step at b/2 "
              "x 2/N, optimistic: small batches use a core less well) and each all-reduce takes N - 1 times "
              "the two-process latency (a ring's steps; the bytes per worker stay about the same).", "",
              "| global batch | N = 2 | N = 4 | N = 8 |", "| ---: | ---: | ---: | ---: |"]
    for batch, runs in by_batch.items():
        one, core = runs["one process"], runs["one process, 1 core, b/2"]
        speedups = [batch / (core["step_ms"] * 2 / n + 2 * results["allreduce_ms"] * (n - 1)) * 1000
                    / one["samples_per_second"] for n in (2, 4, 8)]
        lines.append(f"| {batch} | " + " | ".join(f"{x:.2f}x" for x in speedups) + " |")
    return "\n".join(lines) + "\n"


ALLREDUCE_CHILD = """
import os, sys, time, statistics
os.environ["JAX_PLATFORMS"] = "cpu"
import jax, numpy as np
index, port, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=index)
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
mesh = Mesh(np.array(jax.devices()), ("batch",))
a = jax.make_array_from_process_local_data(NamedSharding(mesh, P("batch")), np.ones((1, n), np.float32))
total = jax.jit(lambda a: a.sum(0), out_shardings=NamedSharding(mesh, P()))
total(a).block_until_ready()
times = []
for _ in range(200):
    start = time.perf_counter()
    total(a).block_until_ready()
    times.append(time.perf_counter() - start)
print(statistics.median(times) * 1000)
"""


def _allreduce_ms(n: int) -> float:
    """Median latency of one all-reduce of n float32 between two JAX processes over loopback."""
    port = _free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [subprocess.Popen([sys.executable, "-c", ALLREDUCE_CHILD, str(i), str(port), str(n)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    return float(outs[0].strip().splitlines()[-1])


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(cli_main(main))
