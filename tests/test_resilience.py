"""Nothing lost, nothing crashes: resume after SIGKILL, atomic exports, hostile inputs, safe loading."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, TINY, run_cli, write_csv


def _popen(args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for(predicate, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_loses_and_repeats_nothing(tmp_path, tiny_csv):
    # 6 epochs, patience high enough to run all of them; kill once epoch 2 is saved (in epoch 3).
    args = ["-m", "kerasrnn.train", "--data", str(tiny_csv), *TINY, "--epochs", "6", "--patience", "10",
            "--dropout", "0"]  # dropout's random masks are not part of the checkpoint (see below)
    state = tmp_path / ".run.partial" / "state.json"
    proc = _popen([*args, "--output", str(tmp_path / "run")], tmp_path)

    def two_epochs_saved():
        try:
            return json.loads(state.read_text())["epochs_done"] >= 2
        except (OSError, ValueError):
            return False

    assert _wait_for(two_epochs_saved, proc), proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run").exists()
    done_at_kill = json.loads(state.read_text())["epochs_done"]

    proc = run_cli([*args, "--output", str(tmp_path / "run")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming {tmp_path / 'run'} after epoch {done_at_kill}" in proc.stdout
    epochs = [int(line.split(",")[0]) for line in (tmp_path / "run/history.csv").read_text().splitlines()[1:]]
    assert epochs == list(range(1, 7))  # every epoch once: none lost, none repeated
    assert not (tmp_path / ".run.partial").exists()

    straight = run_cli([*args, "--output", str(tmp_path / "straight")], cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    resumed_acc = json.loads((tmp_path / "run/metrics.json").read_text())["accuracy"]
    straight_acc = json.loads((tmp_path / "straight/metrics.json").read_text())["accuracy"]
    assert abs(resumed_acc - straight_acc) <= 0.005 + 1e-9, (resumed_acc, straight_acc)
    # Shuffling is seeded per epoch and the optimizer state is restored, so with no dropout the
    # resumed run is the uninterrupted run, to the last digit.
    assert (tmp_path / "run/metrics.json").read_bytes() == (tmp_path / "straight/metrics.json").read_bytes()


@pytest.mark.slow
def test_resume_refuses_other_options_and_missing_checkpoints(tmp_path, tiny_csv):
    proc = run_cli(["-m", "kerasrnn.train", "--resume", str(tmp_path / "nothing")])
    assert proc.returncode == 2 and "no interrupted run to resume" in proc.stderr
    partial = tmp_path / ".run.partial"
    partial.mkdir()
    (partial / "state.json").write_text(json.dumps({"epochs_done": 1, "config": {"units": 999}}))
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(tmp_path / "run"), *TINY])
    assert proc.returncode == 2 and "other options" in proc.stderr


def test_a_checkpoint_from_before_an_option_existed_resumes_with_its_default(tmp_path):
    from kerasrnn.checkpoint import ADDED_LATER, RESUME_KEYS, STATE, load_state
    from kerasrnn.errors import UserError
    from kerasrnn.options import DEFAULTS

    # The command that names what the old run ran with (each later option's "off" value) resumes it.
    config = {**DEFAULTS, **ADDED_LATER}
    old = {k: config[k] for k in RESUME_KEYS if k not in ADDED_LATER}
    (tmp_path / STATE).write_text(json.dumps({"epochs_done": 2, "config": old}))
    assert load_state(tmp_path, config)["epochs_done"] == 2
    with pytest.raises(UserError, match="bidirectional"):
        load_state(tmp_path, {**config, "bidirectional": True})
    # Today's defaults differ from what it ran with: refused, naming the options, not resumed as another model.
    with pytest.raises(UserError, match=r"\(linear\); resume with the same options \(--linear none\)"):
        load_state(tmp_path, {**config, "linear": DEFAULTS["linear"]})
    # --bigrams means nothing without the linear path: any value resumes a run that had none.
    assert load_state(tmp_path, {**config, "bigrams": DEFAULTS["bigrams"]})["epochs_done"] == 2
    # A linear path trained inside model.fit, from before --linear-solver: resumed only that way.
    with_linear = {**old, "linear": "tfidf", "bigrams": DEFAULTS["bigrams"]}
    (tmp_path / STATE).write_text(json.dumps({"epochs_done": 2, "config": with_linear}))
    now = {**config, "linear": "tfidf", "bigrams": DEFAULTS["bigrams"]}
    with pytest.raises(UserError, match=r"\(linear_solver\); resume with the same options \(--linear-solver fit\)"):
        load_state(tmp_path, {**now, "linear_solver": DEFAULTS["linear_solver"]})
    assert load_state(tmp_path, {**now, "linear_solver": "fit"})["epochs_done"] == 2


def test_resume_keeps_the_last_epochs_optimizer_state_when_an_earlier_epoch_was_best(tmp_path):
    """Resuming reads the best epoch's weights for early stopping; the optimizer must keep the
    last epoch's state (Adam moments, step count), or the resumed run drifts from the straight one."""
    from kerasrnn.checkpoint import BEST_WEIGHTS, LAST_WEIGHTS, epoch_checkpoint, restore
    from kerasrnn.paths import path_stopping

    x, y = _tiny_data(0)
    model = _compiled_tiny_model()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.save_weights(tmp_path / BEST_WEIGHTS)
    best = model.get_weights()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    model.save_weights(tmp_path / LAST_WEIGHTS)
    last, last_optimizer = model.get_weights(), [v.numpy() for v in model.optimizer.variables]

    resumed = _compiled_tiny_model()
    restore(resumed, tmp_path, {})
    early = path_stopping(resumed, linear=False, has_val=True, patience=3)
    early.set_model(resumed)
    # the state of a checkpoint written before paths existed (Keras's EarlyStopping's counters)
    state = {"epochs_done": 3, "history": [], "stopped": False,
             "early_stopping": {"best": 0.1, "wait": 2, "best_epoch": 0}}
    callback = epoch_checkpoint(tmp_path, {}, early, state)
    callback.set_model(resumed)
    callback.on_train_begin()
    assert early.state() == {"paths": {"model": {"best": 0.1, "wait": 2, "best_epoch": 0}}}
    assert all(np.array_equal(a, b) for a, b in zip(early.best_weights, best, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(resumed.get_weights(), last, strict=True))
    got = [v.numpy() for v in resumed.optimizer.variables]
    assert len(got) == len(last_optimizer) and all(np.array_equal(a, b) for a, b in zip(got, last_optimizer))
    assert int(resumed.optimizer.iterations.numpy()) == 12  # 3 epochs of 4 batches, not the best epoch's 4


@pytest.mark.slow
def test_export_killed_midway_leaves_previous_exports_valid(tmp_path, tiny_run, tiny_exports):
    out = tmp_path / "exports"
    shutil.copytree(tiny_exports, out)
    manifest_before = (out / "manifest.json").read_bytes()
    proc = _popen(["tools/export.py", "--format", "all", "--run", str(tiny_run), "--out", str(out)], REPO)
    # Kill once the staging folder has content (conversion under way).
    assert _wait_for(lambda: any(p.name.startswith(".staging-") and any(p.iterdir()) for p in out.iterdir()), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "manifest.json").read_bytes() == manifest_before
    verify = run_cli(["tools/check_parity.py", "--exports", str(out), "--verify-manifest"])
    assert verify.returncode == 0, verify.stdout
    # The same inputs as the parity check that export ran before swapping these files in.
    parity = run_cli(["tools/check_parity.py", "--exports", str(out), "--no-mediapipe"])
    assert parity.returncode == 0, parity.stdout[-2000:]
    # The killed export's staging folder is hidden; the next export removes it (its process is gone).
    from kerasrnn.export import remove_stale_staging

    stale = [p for p in out.iterdir() if p.name.startswith(".staging-")]
    assert stale and remove_stale_staging(out) == stale and not any(p.exists() for p in stale)


@pytest.mark.slow
def test_verify_manifest_reports_missing_files(tmp_path, tiny_exports):
    out = tmp_path / "exports"
    shutil.copytree(tiny_exports, out, ignore=shutil.ignore_patterns("savedmodel"))
    (out / "tflite" / "model_int8.tflite").unlink()
    proc = run_cli(["tools/check_parity.py", "--exports", str(out), "--verify-manifest"])
    assert proc.returncode == 1
    assert "missing: tflite/model_int8.tflite" in proc.stdout and "missing: savedmodel/saved_model.pb" in proc.stdout


@pytest.mark.slow
def test_lambda_model_is_refused_not_executed(tmp_path):
    import keras

    marker = tmp_path / "executed"
    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda x: x * 2)(inp)
    model = keras.Model(inp, out)
    model.save(tmp_path / "evil.keras")
    proc = run_cli(["-m", "kerasrnn.predict", "--model", str(tmp_path / "evil.keras"), "hi"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Lambda" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()


# --- hostile inputs ------------------------------------------------------------------------------

def _train(tmp_path, data, *extra, name="run"):
    return run_cli(["-m", "kerasrnn.train", "--data", str(data), "--output", str(tmp_path / name), *TINY,
                    "--epochs", "1", *extra])


def _one_error_line(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


HOSTILE_FILES = {
    # name: (file bytes, expected message fragments)
    "unbalanced quotes": (b'text,label\n"never closed,ham\nok,spam\n', ["unbalanced.csv:", "malformed"]),
    "ragged row": (b"text,label\na,ham\nb,spam,extra\n", ["ragged.csv:3:", "3 fields"]),
    "non-UTF-8 bytes": (b"text,label\nfine,ham\nbad \xff\xfe here,spam\n", ["utf8.csv:3:5:", "0xff"]),
    "only a header": (b"text,label\n", ["header.csv", "no non-empty texts"]),
    "empty file": (b"", ["empty.csv", "empty"]),
    "1-row dataset": (b"text,label\nhello,ham\n", ["onerow.csv", "only one class"]),
    "blank label": (b"text,label\nhello,ham\nworld,\n", ["blanklabel.csv:3", "empty label"]),
    "binary garbage": (bytes(range(256)) * 4, ["garbage.csv:2:118:", "byte 0x80 is not valid UTF-8"]),
    "gzip that is not": (b"not gzip at all", ["fake.csv.gz", "gzip"]),
}
FILE_NAMES = {"unbalanced quotes": "unbalanced.csv", "ragged row": "ragged.csv", "non-UTF-8 bytes": "utf8.csv",
              "only a header": "header.csv", "empty file": "empty.csv", "1-row dataset": "onerow.csv",
              "blank label": "blanklabel.csv", "binary garbage": "garbage.csv", "gzip that is not": "fake.csv.gz"}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_hostile_training_files(tmp_path, case):
    data, needles = HOSTILE_FILES[case]
    path = tmp_path / FILE_NAMES[case]
    path.write_bytes(data)
    _one_error_line(_train(tmp_path, path), *needles)
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.partial").exists()


@pytest.mark.slow
def test_nul_bom_crlf_mixed_labels_and_delimiter_only_texts_train(tmp_path, sms_rows):
    rows = sms_rows[:300]
    body = "\r\n".join(f'"{t.replace(chr(34), chr(34) * 2)}",{1 if l == "spam" else "0"}' for t, l in rows)
    extra = '\r\n"nul\x00inside text",1\r\n"!!! ... ???",0\r\n" ,;: ",1\r\n'
    path = tmp_path / "messy.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\r\n" + (body + extra).encode("utf-8"))
    proc = _train(tmp_path, path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "run/config.json").read_text())["labels"] == ["0", "1"]


@pytest.mark.slow
def test_mixed_label_types_in_jsonl(tmp_path):
    lines = [{"text": f"text number {i} word{i % 7}", "label": [1, "1", 2, "two"][i % 4]} for i in range(80)]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    proc = _train(tmp_path, path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "run/config.json").read_text())["labels"] == ["1", "2", "two"]
    bad = tmp_path / "bool.jsonl"
    bad.write_text('{"text": "a", "label": true}\n')
    _one_error_line(_train(tmp_path, bad, name="run2"), "bool.jsonl:1", "label True")


@pytest.mark.slow
def test_thousands_of_classes(tmp_path):
    rows = [(f"item {c} tag{c} sample {k}", f"class_{c}") for c in range(2000) for k in range(3)]
    path = write_csv(tmp_path / "many.csv", rows)
    proc = _train(tmp_path, path, "--vocab-size", "5000")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert len(metrics["per_class"]) == 2000


@pytest.mark.slow
def test_single_100mb_line_keeps_memory_bounded(tmp_path, sms_rows):
    path = tmp_path / "huge.csv"
    with open(path, "w", encoding="utf-8") as f:
        f.write("text,label\n")
        f.write("word " * (20 * 1024 * 1024) + ",spam\n")  # one 100 MB text
        for t, l in sms_rows[:200]:
            f.write(f'"{t.replace(chr(34), chr(34) * 2)}",{l}\n')
    # VmHWM, not getrusage's ru_maxrss: the latter survives exec and so counts the forking pytest
    # process (TensorFlow loaded) as this child's peak.
    script = ("import sys; from kerasrnn.options import parse_args; from kerasrnn.prepare import prepare_data;"
              "p = prepare_data(parse_args(['--data', sys.argv[1], '--max-len', '24']));"
              "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1];"
              "print(p.arrays.x_train.shape, hwm)")
    proc = run_cli(["-c", script, str(path)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_kb = int(proc.stdout.split()[-1])
    # The file itself is 100 MB; reading, decoding and CSV parsing hold a few copies of it, but
    # tokenizing must not expand it into a list of 20 million strings (that alone is over 1 GB).
    assert peak_kb < 800 * 1024, f"peak RSS {peak_kb / 1024:.0f} MB"


@pytest.mark.slow
def test_one_megabyte_text_at_inference(tiny_run):
    text = "free prize call now " * 52_000
    proc = run_cli(["-m", "kerasrnn.predict", "--run", str(tiny_run), "--json", "-"], stdin=text + "\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["label"] in ("ham", "spam")


BAD_IDS = {
    "too large": lambda L, V: np.full((1, L), V + 5, np.int32),
    "negative": lambda L, V: np.full((1, L), -3, np.int32),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_IDS))
def test_out_of_range_ids_sent_straight_to_each_exported_model(tiny_exports, tiny_run, case):
    """Raw exported models read such ids as <UNKNOWN> (documented); our Python API refuses them."""
    import onnxruntime as ort
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from kerasrnn.run import RunInfo
    from kerasrnn.runtimes import UserError, open_model

    info = RunInfo.load(tiny_run)
    L, V = info.tokenizer.max_len, info.tokenizer.vocab_size
    bad = BAD_IDS[case](L, V)
    unknown = np.full((1, L), 2, np.int32)

    session = ort.InferenceSession(str(tiny_exports / "onnx/model.onnx"))
    assert np.allclose(session.run(None, {"tokens": bad})[0], session.run(None, {"tokens": unknown})[0])

    interp = Interpreter(model_path=str(tiny_exports / "tflite/model.tflite"))
    interp.allocate_tensors()
    answers = []
    for ids in (bad, unknown):
        interp.set_tensor(interp.get_input_details()[0]["index"], ids)
        interp.invoke()
        answers.append(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())
    assert np.allclose(*answers)

    loaded = tf.saved_model.load(str(tiny_exports / "savedmodel"))
    fn = loaded.signatures["serving_default"]
    assert np.allclose(fn(tokens=tf.constant(bad))["probabilities"], fn(tokens=tf.constant(unknown))["probabilities"])

    for path in (tiny_exports / "onnx/model.onnx", tiny_exports / "tflite/model.tflite"):
        with pytest.raises(UserError, match=r"token ids must be in \[0,"):
            rt = open_model(path)
            rt.predict_ids(rt.check_ids(bad))


@pytest.mark.slow
def test_wrong_dtype_and_shape_get_clear_errors(tiny_exports):
    from kerasrnn.runtimes import UserError, open_model

    for path in (tiny_exports / "onnx/model.onnx", tiny_exports / "tflite/model.tflite", tiny_exports / "savedmodel"):
        rt = open_model(path)
        with pytest.raises(UserError, match="shape"):
            rt.check_ids(np.zeros((2, 3), np.int32))
        with pytest.raises(UserError, match="integers"):
            rt.check_ids(np.zeros((1, rt.max_len), np.float32))


def test_a_kill_between_the_weights_and_state_json_resumes_from_the_epoch_state_json_counts(tmp_path, monkeypatch):
    """state.json is the commit point: weights written for an epoch that state.json does not count
    yet (a kill after the weights' rename, before state.json's) are not the ones a resume loads."""
    from kerasrnn import checkpoint
    from kerasrnn.paths import path_stopping

    x, y = _tiny_data(1)
    model = _compiled_tiny_model()
    early = path_stopping(model, linear=False, has_val=False, patience=5)
    saver = checkpoint.epoch_checkpoint(tmp_path, {}, early, None)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[early, saver])
    after_two = model.get_weights()

    class Killed(Exception):
        pass

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(checkpoint, "write_json_atomic", killed)  # dies before state.json of epoch 3
    with pytest.raises(Killed):
        model.fit(x, y, epochs=3, initial_epoch=2, batch_size=16, verbose=0, callbacks=[early, saver])
    assert (tmp_path / "last-3.weights.h5").is_file()  # epoch 3's weights are on disk, uncounted
    state = json.loads((tmp_path / checkpoint.STATE).read_text())
    assert state["epochs_done"] == 2
    resumed = _compiled_tiny_model()
    checkpoint.restore(resumed, tmp_path, state)
    assert all(np.array_equal(a, b) for a, b in zip(resumed.get_weights(), after_two, strict=True))


def _tiny_data(seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 50, (64, 8)).astype(np.int32), rng.integers(0, 2, 64).astype(np.int32)


def _compiled_tiny_model():
    import keras

    from kerasrnn.model import build_model

    model = build_model(50, 2, 8, embed_dim=4, units=4, pooling="max")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    return model
