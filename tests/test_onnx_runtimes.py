"""ONNX: the exported model.onnx runs in the OLDEST onnxruntime pyproject.toml declares and in the
newest installed one, and both answer as the Keras model does (the float32 parity rules).

The old runtime lives in its own small venv (onnxruntime and its own deps only, no kerasrnn): ids go
in as a .npy file, probabilities come back as .npz. CI (.ci/run) builds that venv and names its
python in KERASRNN_OLD_ORT_PYTHON; without the variable the test builds it once in
~/.cache/kerasrnn-test (or skips, saying why, when pip cannot install it).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

ENV_VAR = "KERASRNN_OLD_ORT_PYTHON"
IR_TOO_NEW = 14  # onnx 1.23's default IR version; onnxruntime 1.20 reads IR <= 10

# Runs in the old runtime's interpreter (python -I: no PYTHONPATH, no kerasrnn): argv model, mode, ...
#   run ids.npy out.npz -> probabilities at batch 32 (ragged last batch) and batch 1
#   load             -> exits 0 if the session opens, else prints the error and exits 3
# Prints {"onnxruntime": version} as its last line.
SCRIPT = r'''
import json, sys
import numpy as np
import onnxruntime as ort

model, mode = sys.argv[1], sys.argv[2]
info = {"onnxruntime": ort.__version__}
opts = ort.SessionOptions()
opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
try:
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
except Exception as exc:
    print(json.dumps({**info, "error": str(exc)}))
    sys.exit(3)
if mode == "run":
    ids = np.load(sys.argv[3])
    name = session.get_inputs()[0].name
    run = lambda rows: session.run(None, {name: rows})[0]
    np.savez(sys.argv[4],
             batch32=np.concatenate([run(ids[i:i + 32]) for i in range(0, len(ids), 32)]),
             batch1=np.concatenate([run(ids[i:i + 1]) for i in range(len(ids))]))
print(json.dumps(info))
'''


def declared_minimum() -> str:
    """The onnxruntime lower bound in pyproject.toml's dependencies, e.g. "1.20"."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    (spec,) = [d for d in deps if re.match(r"onnxruntime\b", d)]
    m = re.fullmatch(r"onnxruntime>=([0-9.]+)", spec.replace(" ", ""))
    assert m, f"pyproject.toml: expected onnxruntime>=X.Y, got {spec!r}"
    return m.group(1)


def _build_venv(target: Path, requirement: str) -> Path:
    """A venv at `target` with `requirement` installed; built beside it and moved in when complete,
    so an interrupted or concurrent build never leaves a half venv at `target`."""
    python = target / "bin" / "python"
    if (target / "complete").is_file():
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.with_name(f"{target.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, capture_output=True, timeout=300)
        proc = subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "-q",
                               "--disable-pip-version-check", requirement],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode:
            last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
            pytest.skip(f"{ENV_VAR} unset and pip could not install {requirement} into a venv at {target} "
                        f"({last}); set {ENV_VAR} to a python that has it")
        (building / "complete").write_text(requirement + "\n")
        try:
            os.replace(building, target)
        except OSError:  # another process finished first: use its venv
            pass
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return python


@pytest.fixture(scope="session")
def old_ort_python() -> Path:
    """The interpreter with the oldest declared onnxruntime: CI's (KERASRNN_OLD_ORT_PYTHON, which must
    work when set) or one built once in the user's cache."""
    given = os.environ.get(ENV_VAR)
    if given:
        python = Path(given)
        assert os.access(python, os.X_OK), f"{ENV_VAR}={given}: not an executable interpreter"
        return python
    minimum = declared_minimum()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kerasrnn-test"
    return _build_venv(cache / f"onnxruntime-{minimum}-py{sys.version_info[0]}{sys.version_info[1]}",
                       f"onnxruntime=={minimum}.*")


def _old(python: Path, tmp_path: Path, model: Path, *args: str) -> tuple[int, dict]:
    script = tmp_path / "old_ort.py"
    script.write_text(SCRIPT, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([str(python), "-I", str(script), str(model), *args], capture_output=True, text=True,
                          timeout=300, env=env)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"old onnxruntime script printed nothing (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return proc.returncode, json.loads(lines[-1])


@pytest.mark.slow
def test_onnx_file_runs_in_the_oldest_declared_and_newest_onnxruntime(tmp_path, tiny_run, tiny_exports,
                                                                      old_ort_python):
    import onnx
    import onnxruntime

    from kerasrnn.export.parity import Artifact, _compare, edge_cases, format_row
    from kerasrnn.run import RunInfo
    from kerasrnn.runtimes import OnnxRuntime

    minimum = declared_minimum()
    path = tiny_exports / "onnx/model.onnx"
    new = OnnxRuntime(path, threads=1)
    # The ids as the exported file's own tokenizer (its metadata) writes them.
    info = RunInfo.load(tiny_run)
    texts, labels = info.test_split()
    texts = list(texts) + edge_cases(new.max_len)
    ids = new.tokenizer.encode(texts).astype(np.int32)
    np.save(tmp_path / "ids.npy", ids)
    index = {lab: i for i, lab in enumerate(info.labels)}
    y = np.array([index[lab] for lab in labels] + [-1] * (len(texts) - len(labels)))
    ref = np.asarray(info.load_model().predict(ids, batch_size=256, verbose=0), dtype=np.float32)

    rc, old = _old(old_ort_python, tmp_path, path, "run", str(tmp_path / "ids.npy"), str(tmp_path / "old.npz"))
    assert rc == 0, f"onnxruntime {old['onnxruntime']} refused {path}: {old.get('error')}"
    # The old interpreter really is the declared minimum, and the main one is newer.
    assert old["onnxruntime"].split(".")[:2] == minimum.split("."), (old["onnxruntime"], minimum)
    from packaging.version import Version

    assert Version(onnxruntime.__version__) > Version(old["onnxruntime"])
    old_probs = np.load(tmp_path / "old.npz")
    artifact = Artifact("onnx/model.onnx", path, "onnx", "float32")
    results = [_compare(artifact, f"ort {old['onnxruntime']} ids@{b}", old_probs[b], ref, y, 0)
               for b in ("batch32", "batch1")]
    new_batch32 = np.concatenate([new.predict_ids(ids[i:i + 32]) for i in range(0, len(ids), 32)])
    results.append(_compare(artifact, f"ort {onnxruntime.__version__} ids@batch32", new_batch32, ref, y, 0))
    for r in results:
        print(format_row(r))
    assert all(r.passed for r in results), "\n".join(format_row(r) for r in results if not r.passed)

    # The check can fail: the same file at IR 14 is refused by the old runtime (so it is old, and the
    # IR version the exporter writes is what lets it load), while the newest runtime still opens it.
    proto = onnx.load(str(path))
    proto.ir_version = IR_TOO_NEW
    too_new = tmp_path / f"model_ir{IR_TOO_NEW}.onnx"
    onnx.save(proto, str(too_new))
    rc, refused = _old(old_ort_python, tmp_path, too_new, "load")
    assert rc == 3 and "IR version" in refused.get("error", ""), refused
    OnnxRuntime(too_new, threads=1)
