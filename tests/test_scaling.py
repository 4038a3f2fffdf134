"""Scaling out: multi-worker training over loopback, sharded / streamed corpora, bounded memory."""
from __future__ import annotations

import csv
import gzip
import json
import os
import random
import socket
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from conftest import REPO, TINY, run_cli

# No dropout: its random masks differ between one process and two replicas, so the runs could not match.
TWO_EPOCHS = [*TINY, "--epochs", "2", "--dropout", "0"]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _train_two_workers(args: list[str], out) -> list[subprocess.CompletedProcess]:
    """Two worker processes over loopback, started together; their results once both have ended."""
    workers = ",".join(f"127.0.0.1:{p}" for p in _free_ports(2))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "kerasrnn.train", *args, "--output", str(out),
                               "--distribute", "multiworker", "--workers", workers, "--task-index", str(i)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    done = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return done


def _probabilities(run, texts):
    from kerasrnn.run import RunInfo

    info = RunInfo.load(run)
    return info.load_model().predict(info.tokenizer.encode(texts), verbose=0)


def _shards(tmp_path, rows, n, header=("text", "label")):
    """`rows` cut into n consecutive shards, alternately gzip-compressed and plain CSV."""
    folder = tmp_path / "shards"
    folder.mkdir(parents=True)
    size = -(-len(rows) // n)
    for k in range(n):
        path = folder / (f"part-{k:02d}.csv.gz" if k % 2 == 0 else f"part-{k:02d}.csv")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "wt", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows[k * size:(k + 1) * size])
    return folder


# Two workers compute each global batch in halves and average gradients; only the order of float
# additions differs from one process, so predictions agree to float32 rounding (seen: 2e-6).
MULTIWORKER_TOLERANCE = 1e-4


@pytest.mark.slow
def test_two_tensorflow_workers_on_loopback_train_like_one_process(tmp_path, tiny_csv):
    out = tmp_path / "two"
    procs = _train_two_workers(["--data", str(tiny_csv), *TWO_EPOCHS, "--backend", "tensorflow"], out)
    for p in procs:
        assert p.returncode == 0, p.stderr[-3000:]
    assert "CollectiveAllReduceStrategy, replicas: 2" in procs[0].stdout  # tf.distribute, not JAX
    assert "the chief writes" in procs[1].stdout
    single = tmp_path / "one"
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(single), *TWO_EPOCHS,
                    "--backend", "tensorflow"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # One run folder, written once, by the chief; nothing else beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    assert (out / "model.keras").is_file() and (out / "metrics.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["distribute"] == "multiworker" and config["backend"] == "tensorflow"
    texts = [json.loads(line)["text"] for line in (single / "test_split.jsonl").read_text().splitlines()]
    diff = np.abs(_probabilities(out, texts) - _probabilities(single, texts)).max()
    assert diff <= MULTIWORKER_TOLERANCE, diff


@pytest.mark.slow
def test_multiworker_option_errors(tmp_path, tiny_csv):
    base = ["-m", "kerasrnn.train", "--data", str(tiny_csv), "--distribute", "multiworker"]
    cases = [
        ([*base, "--output", str(tmp_path / "a")], "needs --workers"),
        ([*base, "--output", str(tmp_path / "b"), "--workers", "127.0.0.1:1,127.0.0.1:2", "--task-index", "2"],
         "--task-index must be 0..1"),
        ([*base, "--output", str(tmp_path / "c"), "--workers", "localhost", "--task-index", "0"], "not host:port"),
        ([*base, "--workers", "127.0.0.1:1", "--task-index", "0"], "needs --output"),
        ([*base, "--output", str(tmp_path / "d"), "--workers", "127.0.0.1:1", "--task-index", "0",
          "--backend", "torch"], "runs on JAX"),
        (["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(tmp_path / "f"), "--distribute", "mirrored",
          "--replicas", "2", "--batch-size", "31"], "multiple of the 2 devices"),
        (["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(tmp_path / "g"), "--vocab", "v.json"],
         "--vocab goes with a streamed corpus"),
        (["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(tmp_path / "e"), "--task-index", "1"],
         "go with --distribute multiworker"),
    ]
    for args, message in cases:
        proc = run_cli(args, env={"TF_CONFIG": ""})
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr[-500:])
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def _worker_summary(run) -> dict:
    return json.loads((run / "config.json").read_text())["data_parallel"]


@pytest.mark.slow
def test_two_jax_workers_in_memory_match_one_process_on_two_devices(tmp_path, tiny_csv):
    """Two processes over loopback (JAX's distributed runtime, CPU collectives) and one process with
    two XLA host devices train on the same global batches: the same model to float rounding."""
    args = ["--data", str(tiny_csv), *TWO_EPOCHS, "--linear", "none"]  # the RNN alone decides the outputs
    procs = _train_two_workers(args, tmp_path / "two")
    for p in procs:
        assert p.returncode == 0, p.stderr[-3000:]
    assert "JAX DataParallel, replicas: 2 in 2 process(es)" in procs[0].stdout
    assert "the chief writes" in procs[1].stdout
    proc = run_cli(["-m", "kerasrnn.train", *args, "--output", str(tmp_path / "one"), "--distribute", "mirrored",
                    "--replicas", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replicas: 2 in 1 process(es)" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["backend"] == "jax" and config["distribute"] == "multiworker"
    summary = config["data_parallel"]
    assert summary["processes"] == 2 and summary["rows_per_worker_batch"] == 16 and len(summary["workers"]) == 2
    texts = [json.loads(line)["text"] for line in (tmp_path / "one" / "test_split.jsonl").read_text().splitlines()]
    diff = np.abs(_probabilities(tmp_path / "two", texts) - _probabilities(tmp_path / "one", texts)).max()
    assert diff <= MULTIWORKER_TOLERANCE, diff


@pytest.mark.slow
def test_two_jax_workers_read_half_a_shard_glob_each(tmp_path, sms_rows):
    """The Done-when of scaling out: a vocabulary file made once, two workers each reading their own
    shards, one run folder, accuracy within 2 points of one process with the same flags."""
    folder = _shards(tmp_path, sms_rows[:2000], 4)
    pattern = str(folder / "part-*.csv*")
    vocab = tmp_path / "vocab.json"
    proc = run_cli(["-m", "kerasrnn.vocab", "--data", pattern, "--output", str(vocab), "--vocab-size", "1500",
                    "--max-len", "24"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Eight epochs: at three both runs were still climbing steeply, so the 2-point check measured where on
    # the learning curve each stopped (0.9647 vs 0.9906 on one CPU), not what sharding does.
    args = ["--data", pattern, "--vocab", str(vocab), *TINY, "--epochs", "8"]
    procs = _train_two_workers(args, tmp_path / "two")
    for p in procs:
        assert p.returncode == 0, p.stderr[-3000:]
        assert "the corpus is not scanned" in p.stdout
    proc = run_cli(["-m", "kerasrnn.train", *args, "--output", str(tmp_path / "one")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["backend"] == "jax" and config["data_summary"]["train"] == json.loads(
        (tmp_path / "one" / "config.json").read_text())["data_summary"]["train"]
    train_rows = config["data_summary"]["train"]
    workers = config["data_parallel"]["workers"]
    assert [w["files"] for w in workers] == [2, 2]  # four shards, two each
    read = [w["training_rows_read_per_epoch"] for w in workers]
    assert sum(read) == pytest.approx(train_rows, abs=1) and all(0.4 < r / train_rows < 0.6 for r in read), read
    accuracy = [json.loads((tmp_path / r / "metrics.json").read_text())["accuracy"] for r in ("two", "one")]
    assert abs(accuracy[0] - accuracy[1]) <= 0.02, accuracy
    # The vocabulary file belongs to its shards: a changed shard is refused, naming the file.
    with open(folder / "part-01.csv", "a", encoding="utf-8") as f:
        f.write("one more text,ham\n")
    proc = run_cli(["-m", "kerasrnn.train", *args, "--output", str(tmp_path / "stale")])
    assert proc.returncode == 2 and "vocab.json: made from other files" in proc.stderr
    assert not (tmp_path / "stale").exists()


def test_worker_part_deals_shards_by_size_or_rows(tmp_path):
    from kerasrnn.stream import Corpus, worker_part

    sizes = [500, 400, 300, 200, 100]
    files = []
    for k, size in enumerate(sizes):
        path = tmp_path / f"s{k}.csv"
        path.write_text("text,label\n" + "x" * size + ",a\n")
        files.append(path)
    corpus = Corpus(files)
    parts = [worker_part(corpus, i, 2) for i in range(2)]
    assert [[f.name for f in p.files] for p in parts] == [["s0.csv", "s3.csv", "s4.csv"], ["s1.csv", "s2.csv"]]
    three = [worker_part(corpus, i, 3) for i in range(3)]
    assert sorted(f.name for p in three for f in p.files) == [f.name for f in files]  # each shard read once
    rows = tmp_path / "rows.csv"
    rows.write_text("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(10)))
    one_file = Corpus([rows], val_split=0.0, test_split=0.0)
    seen = [[t for _, t, _ in worker_part(one_file, i, 3).rows("train")] for i in range(3)]
    assert seen[0] == ["text 0", "text 3", "text 6", "text 9"] and sorted(sum(seen, [])) == sorted(
        t for _, t, _ in one_file.rows("train"))


def test_worker_part_deals_shards_by_training_texts_when_counted(tmp_path):
    from kerasrnn.stream import Corpus, worker_part

    files = []
    for k in range(3):
        path = tmp_path / f"s{k}.csv"
        path.write_text("text,label\n" + "x" * (100 * (k + 1)) + ",a\n")  # bytes: s2 > s1 > s0
        files.append(path)
    corpus = Corpus(files, split_counts={str(files[0]): {"train": 90}, str(files[1]): {"train": 50},
                                         str(files[2]): {"train": 40}})
    assert [[f.name for f in worker_part(corpus, i, 2).files] for i in range(2)] == [["s0.csv"], ["s1.csv", "s2.csv"]]


def test_a_worker_without_validation_texts_stops_every_worker_before_training(tmp_path):
    from kerasrnn.data_parallel import Workers, _checked_part
    from kerasrnn.errors import UserError
    from kerasrnn.stream import Corpus

    files = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for f in files:
        f.write_text("text,label\nx,a\n")
    corpus = Corpus(files, split_counts={str(files[0]): {"train": 10, "validation": 2}, str(files[1]): {"train": 10}})
    for index in (0, 1):  # both workers see worker 1's empty part, so both refuse
        with pytest.raises(UserError, match="worker 1's shards hold no validation texts"):
            _checked_part(corpus, Workers(index, 2, 2), fed=10, fed_validation=2)
    assert _checked_part(corpus, Workers(0, 2, 2), fed=10, fed_validation=0).files == [files[0]]


def test_vocabulary_file_knows_its_shards_by_content_not_path(tmp_path, sms_rows):
    from kerasrnn import vocab
    from kerasrnn.errors import UserError
    from kerasrnn.options import DEFAULTS

    folder = _shards(tmp_path / "a", sms_rows[:600], 3)
    config = {**DEFAULTS, "data": str(folder / "part-*.csv*"), "vocab_size": 500, "bigrams": 100}
    made = vocab.build(config)
    (tmp_path / "vocab.json").write_text(json.dumps(made))
    copy = tmp_path / "elsewhere" / "shards"
    copy.parent.mkdir()
    import shutil

    shutil.copytree(folder, copy)  # the same shards mounted elsewhere: accepted, counts and all
    moved = {**config, "data": str(copy / "part-*.csv*")}
    corpus = vocab.corpus_for(moved)
    loaded = vocab.load(str(tmp_path / "vocab.json"), corpus, moved)
    assert loaded["words"] == made["words"] and sum(c["train"] for c in corpus.split_counts.values()) == made["sizes"]["train"]
    assert loaded["linear_terms"]["idf"].dtype == np.float32
    with pytest.raises(UserError, match="--vocab-size 500"):
        vocab.load(str(tmp_path / "vocab.json"), vocab.corpus_for(moved), {**moved, "vocab_size": 400})
    with pytest.raises(UserError, match="--max-len"):
        vocab.load(str(tmp_path / "vocab.json"), vocab.corpus_for(moved), {**moved, "max_len": made["max_len"] + 1})
    shard = copy / "part-01.csv"
    text = shard.read_text()
    shard.write_text(text.replace(",ham", ",hom", 1))  # same size, other content
    with pytest.raises(UserError, match="part-01.csv is not part-01.csv as it was"):
        vocab.load(str(tmp_path / "vocab.json"), vocab.corpus_for(moved), moved)
    (tmp_path / "bad.json").write_text(json.dumps({**made, "files": None}))
    with pytest.raises(UserError, match="damaged vocabulary file"):
        vocab.load(str(tmp_path / "bad.json"), vocab.corpus_for(config), config)


def test_worker_batches_assemble_the_global_batch():
    from kerasrnn.batching import worker_batches

    rng = np.random.default_rng(0)
    x = np.zeros((70, 40), np.int32)
    for i, n in enumerate(rng.integers(1, 40, 70)):
        x[i, :n] = rng.integers(3, 100, n)
    y = np.arange(70)
    args = (x, y, 16, 5, None, 0, 2, "buckets")
    single = list(worker_batches(*args))
    halves = [list(worker_batches(*args, worker=i, workers=2)) for i in range(2)]
    assert len(single) == len(halves[0]) == len(halves[1]) == 2 * 5  # ceil(70 / 16) full batches per epoch
    for whole, a, b in zip(single, *halves):
        assert a[0].shape == b[0].shape == (8, whole[0].shape[1])  # one width for both workers
        assert np.array_equal(np.concatenate([a[1], b[1]]), whole[1])
    first_epoch = np.concatenate([b[1] for b in single[:5]])
    assert set(first_epoch) == set(range(70)) and len(first_epoch) == 80  # every row, 10 again to fill up


def test_process_addresses_put_the_chief_first():
    from kerasrnn.distribute import process_addresses

    cluster = {"chief": ["c:1"], "worker": ["w:1", "w:2"]}
    assert process_addresses({"cluster": cluster, "task": {"type": "chief", "index": 0}}) == (["c:1", "w:1", "w:2"], 0)
    assert process_addresses({"cluster": cluster, "task": {"type": "worker", "index": 1}})[1] == 2


def test_shard_glob_gives_the_same_vocabulary_and_split_as_the_whole_file(tmp_path, shared_datasets):
    from kerasrnn.stream import Corpus, shard_files

    whole = shared_datasets / "20newsgroups_train.csv"
    with open(whole, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    folder = _shards(tmp_path, rows, 5, header)
    results = []
    for pattern in (str(whole), str(folder / "part-*.csv*")):
        corpus = Corpus(shard_files(pattern), None, val_split=0.1, test_split=0.2)
        scan = corpus.scan(20000, None, count_cap=400_000)
        test_rows = [(text, label) for _, text, label in corpus.rows("test")]
        results.append((scan, dict(corpus.sizes), test_rows))
    (scan_a, sizes_a, test_a), (scan_b, sizes_b, test_b) = results
    assert len(shard_files(str(folder / "part-*.csv*"))) == 5
    assert scan_a["words"] == scan_b["words"] and len(scan_a["words"]) == 20000 - 3
    assert scan_a["max_len"] == scan_b["max_len"] and scan_a["labels"] == scan_b["labels"]
    assert sizes_a == sizes_b and test_a == test_b
    assert abs(sizes_a["test"] / sum(sizes_a.values()) - 0.2) < 0.02  # the hash split keeps its fractions


def test_split_is_a_pure_function_of_the_text():
    from kerasrnn.stream import split_of

    texts = [f"message number {i}" for i in range(20000)]
    parts = Counter(split_of(t, 0.1, 0.2) for t in texts)
    assert abs(parts["test"] / 20000 - 0.2) < 0.015 and abs(parts["validation"] / 20000 - 0.1) < 0.015
    assert [split_of(t, 0.1, 0.2) for t in texts[:500]] == [split_of(t, 0.1, 0.2) for t in texts[:500]]
    # Raising --test-split only moves texts into the test split, never out of it.
    assert all(split_of(t, 0.1, 0.3) == "test" for t in texts if split_of(t, 0.1, 0.2) == "test")


def test_bounded_counter_keeps_the_frequent_words():
    from kerasrnn.stream import BoundedCounter

    rng = random.Random(0)
    counter = BoundedCounter(cap=1000)
    frequent = [f"w{i}" for i in range(50)]
    for _ in range(200):
        counter.update(frequent + [f"rare{rng.randrange(10**9)}" for _ in range(40)])
    assert len(counter.counts) <= 1000 and counter.pruned > 0
    assert all(counter.counts[w] == 200 for w in frequent)


def test_buffer_shuffle_is_a_seeded_permutation():
    from kerasrnn.stream import _buffer_shuffle

    items = list(range(1000))
    a = list(_buffer_shuffle(iter(items), 64, random.Random(1)))
    assert sorted(a) == items and a != items
    assert a == list(_buffer_shuffle(iter(items), 64, random.Random(1)))
    assert a != list(_buffer_shuffle(iter(items), 64, random.Random(2)))


@pytest.mark.slow
def test_streamed_run_end_to_end_and_errors_name_the_shard(tmp_path, sms_rows):
    folder = _shards(tmp_path, sms_rows[:900], 3)
    out = tmp_path / "run"
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(folder / "*.csv*"), "--output", str(out), *TWO_EPOCHS])
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    summary = config["data_summary"]
    assert summary["streamed"]["split"].startswith("hash") and len(summary["streamed"]["files"]) == 3
    assert summary["train"] + summary["validation"] + summary["test"] == summary["rows_used"] == 900
    test_lines = (out / "test_split.jsonl").read_text().splitlines()
    assert len(test_lines) == summary["test"] == json.loads((out / "metrics.json").read_text())["num_examples"]
    # A broken row in a shard: one line naming that shard and line, nothing written.
    bad = folder / "part-01.csv"
    bad.write_text(bad.read_text() + '"unbalanced,ham\n')
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(folder / "*.csv*"), "--output", str(tmp_path / "x")])
    assert proc.returncode == 2 and f"{bad.name}:" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tmp_path / "nothing-*.csv"), "--output", str(tmp_path / "y")])
    assert proc.returncode == 2 and "no file matches" in proc.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _peak_rss_mb(tmp_path, args: list[str]) -> float:
    """Peak RSS of one training process: its parent here is a fresh interpreter with no other child."""
    script = ("import resource, subprocess, sys;"
              "p = subprocess.run([sys.executable, '-m', 'kerasrnn.train', *sys.argv[1:]], capture_output=True, text=True);"
              "sys.stderr.write(p.stderr[-2000:]);"
              "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    proc = run_cli(["-c", script, *args], timeout=900)
    code, kb = proc.stdout.split()[-2:]
    assert code == "0", proc.stderr[-2000:]
    return int(kb) / 1024


# Streaming keeps no row: what grows with the corpus is the word counter (capped) and the label
# set. 64 MB over the 1x run leaves room for allocator noise, not for the corpus.
STREAMING_GROWTH_CEILING_MB = 64


@pytest.mark.slow
def test_streaming_memory_stays_bounded_on_a_corpus_20x_the_default(tmp_path, sms_rows):
    rng = random.Random(0)
    small = _shards(tmp_path / "x1", sms_rows, 2)
    # 20 copies, each text made distinct (a random number appended), so every row is new data
    big_rows = [(f"{text} {rng.randrange(10**6)}", label) for _ in range(20) for text, label in sms_rows]
    big = _shards(tmp_path / "x20", big_rows, 8)
    args = ["--epochs", "1", "--units", "8", "--embed-dim", "8", "--max-len", "24", "--batch-size", "256",
            "--verbose", "0", "--vocab-size", "5000"]
    peak_small = _peak_rss_mb(tmp_path, ["--data", str(small / "*.csv*"), "--output", str(tmp_path / "r1"), *args])
    peak_big = _peak_rss_mb(tmp_path, ["--data", str(big / "*.csv*"), "--output", str(tmp_path / "r20"), *args])
    rows_used = json.loads((tmp_path / "r20" / "config.json").read_text())["data_summary"]["rows_used"]
    assert rows_used == 20 * len(sms_rows)
    print(f"peak RSS: 1x {peak_small:.0f} MB, 20x {peak_big:.0f} MB")
    assert peak_big - peak_small <= STREAMING_GROWTH_CEILING_MB, (peak_small, peak_big)


@pytest.mark.slow
def test_stream_flag_refuses_a_folder(tmp_path):
    (tmp_path / "ham").mkdir()
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tmp_path), "--stream", "--output", str(tmp_path / "o")])
    assert proc.returncode == 2 and "not a folder" in proc.stderr
