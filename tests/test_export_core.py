"""The export core end to end: layout, manifest, every format answering alike, atomicity."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import TINY, run_cli  # noqa: F401


@pytest.mark.slow
def test_layout_and_manifest(tiny_exports, tiny_run):
    manifest = json.loads((tiny_exports / "manifest.json").read_text())
    assert manifest["source_run"] == str(tiny_run)
    for rel in ("savedmodel/saved_model.pb", "onnx/model.onnx", "onnx/vocab.txt", "onnx/labels.txt",
                "tflite/model.tflite", "tflite/model_float16.tflite", "tflite/model_dynamic.tflite",
                "tflite/model_int8.tflite", "tflite/vocab.txt"):
        assert rel in manifest["files"], rel
        assert manifest["files"][rel]["size"] == (tiny_exports / rel).stat().st_size
    from kerasrnn.fileio import sha256_file

    assert manifest["files"]["onnx/model.onnx"]["sha256"] == sha256_file(tiny_exports / "onnx/model.onnx")
    assert manifest["artifacts"]["onnx"]["opset"] >= 17
    assert manifest["artifacts"]["onnx"]["inputs"]["tokens"] == {"dtype": "int32", "shape": ["batch", 24]}
    for name in ("tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime"):
        assert name in manifest["versions"]
    assert not list(tiny_exports.glob(".staging-*")) and not list(tiny_exports.glob(".old-*"))


@pytest.mark.slow
def test_predict_gives_the_same_answer_in_every_format(tiny_run, tiny_exports):
    texts = ["WINNER!! Claim your FREE prize now", "are we still on for dinner?"]
    answers = []
    for model in (tiny_run, tiny_run / "model.keras", tiny_exports / "savedmodel",
                  tiny_exports / "onnx/model.onnx", tiny_exports / "tflite/model.tflite"):
        proc = run_cli(["-m", "kerasrnn.predict", "--model", str(model), "--json", *texts])
        assert proc.returncode == 0, proc.stderr[-2000:]
        answers.append([json.loads(line) for line in proc.stdout.strip().splitlines()])
    for other in answers[1:]:
        for a, b in zip(answers[0], other):
            assert a["label"] == b["label"]
            assert abs(a["probability"] - b["probability"]) <= 1e-5


@pytest.mark.slow
def test_failed_export_leaves_previous_exports_untouched(tmp_path, tiny_run, tiny_exports):
    out = tmp_path / "exports"
    shutil.copytree(tiny_exports, out)
    before = (out / "manifest.json").read_bytes()
    broken = tmp_path / "broken_run"
    shutil.copytree(tiny_run, broken)
    (broken / "model.keras").write_bytes(b"not a zip")
    proc = run_cli(["tools/export.py", "--format", "onnx", "--run", str(broken), "--out", str(out)])
    assert proc.returncode == 2 and "model.keras" in proc.stderr
    assert (out / "manifest.json").read_bytes() == before
    proc = run_cli(["tools/check_parity.py", "--exports", str(out), "--verify-manifest"])
    assert proc.returncode == 0, proc.stdout


@pytest.mark.slow
def test_bidirectional_run_exports_to_every_format_with_parity(tmp_path, tiny_csv):
    run, exports = tmp_path / "run", tmp_path / "exports"
    proc = run_cli(["-m", "kerasrnn.train", "--data", str(tiny_csv), "--output", str(run), *TINY,
                    "--bidirectional"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((run / "config.json").read_text())
    assert config["bidirectional"] is True
    # The defaults, int8 included: its file keeps the arithmetic in float (the converter's
    # full-integer int8 was off by up to 0.48 on bidirectional models and is no longer a default).
    proc = run_cli(["tools/export.py", "--format", "all", "--run", str(run), "--out", str(exports)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    proc = run_cli(["tools/check_parity.py", "--run", str(run), "--exports", str(exports)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((exports / "parity.json").read_text())
    assert report["passed"] and len(report["results"]) >= 11
    routes = {(r["artifact"], r["route"]) for r in report["results"]}
    assert ("tflite/model.tflite", "mediapipe-text") in routes and ("onnx/model.onnx", "ids@batch1") in routes
    assert ("tflite/model_dynamic.tflite", "mediapipe-text") in routes
    assert ("tflite/model_int8.tflite", "mediapipe-text") in routes


# --- the staging / swap logic in-process, with stand-in formats (no model, no converter) ---------

class _Format:
    """A stand-in format module: export(context, folder) writes `files` and returns one entry."""

    def __init__(self, files: dict[str, str], fail: bool = False):
        self.files, self.fail, self.folders = files, fail, []

    def export(self, context, folder):
        self.folders.append(folder)
        for rel, text in self.files.items():
            (folder.path / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder.path / rel).write_text(text)
            if self.fail:
                raise RuntimeError("converter crashed half-way")
        return {"path": folder.rel(folder.path / "model.bin"), "written": sorted(self.files)}


def _context(run="run-1"):
    from types import SimpleNamespace

    return SimpleNamespace(source_run=run, labels=["ham", "spam"], tokenizer=SimpleNamespace(spec=lambda: {"max_len": 8}))


def _passes(context, staging, entries, out, log):
    # the staged files are complete and where the entries say, before anything is swapped in
    for entry in entries.values():
        assert (staging / entry["path"]).is_file()
        assert not (out / entry["path"]).exists() or (out / entry["path"]).read_text() != "new"


def _fails(context, staging, entries, out, log):
    from kerasrnn.export.parity import Failure, ParityFailed

    raise ParityFailed([Failure("b/model.bin", "ids@batch1", "max_abs", 0.5, 1e-5, "b", "float32")])


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def two_formats(tmp_path):
    from kerasrnn.export.core import export_formats

    out = tmp_path / "exports"
    formats = {"a": _Format({"model.bin": "a1", "extra/vocab.txt": "v"}), "b": _Format({"model.bin": "b1", "old.txt": "x"})}
    manifest = export_formats(_context(), out, ["a", "b"], _passes, log=lambda line: None, exporters=formats)
    return out, manifest


def test_each_format_gets_its_own_folder_and_names_its_files_from_it(two_formats):
    out, manifest = two_formats
    assert manifest["artifacts"]["a"] == {"source_run": "run-1", "path": "a/model.bin", "written": ["extra/vocab.txt", "model.bin"]}
    assert set(manifest["files"]) == {"a/model.bin", "a/extra/vocab.txt", "b/model.bin", "b/old.txt"}
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("fail", ["parity", "exporter"])
def test_a_failed_export_leaves_previous_exports_and_manifest_untouched(two_formats, fail):
    from kerasrnn.errors import ParityError
    from kerasrnn.export.core import export_formats

    out, _ = two_formats
    before, manifest_before = _tree(out), (out / "manifest.json").read_bytes()
    formats = {"a": _Format({"model.bin": "new"}), "b": _Format({"model.bin": "new"}, fail=fail == "exporter")}
    with pytest.raises(ParityError if fail == "parity" else RuntimeError):
        export_formats(_context("run-2"), out, ["a", "b"], _fails, log=lambda line: None, exporters=formats)
    assert formats["a"].folders  # it did get as far as writing new files
    assert _tree(out) == before and (out / "manifest.json").read_bytes() == manifest_before
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_a_swap_replaces_only_the_exported_formats_folders_and_entries(two_formats):
    from kerasrnn.export.core import export_formats

    out, old = two_formats
    a_before = _tree(out / "a")
    manifest = export_formats(_context("run-2"), out, ["b"], _passes, log=lambda line: None,
                              exporters={"b": _Format({"model.bin": "new"})})
    assert _tree(out / "a") == a_before and manifest["artifacts"]["a"] == old["artifacts"]["a"]
    assert {k: v for k, v in manifest["files"].items() if k.startswith("a/")} == \
        {k: v for k, v in old["files"].items() if k.startswith("a/")}
    assert (out / "b/model.bin").read_text() == "new" and not (out / "b/old.txt").exists()
    assert "b/old.txt" not in manifest["files"] and manifest["artifacts"]["b"]["source_run"] == "run-2"
    assert manifest["files"]["b/model.bin"]["size"] == 3 and manifest["source_run"] == "run-2"


def test_stale_staging_of_dead_processes_is_removed_and_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    from kerasrnn.export.core import remove_stale_staging

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    out = tmp_path / "exports"
    stale = [out / f".staging-{dead_pid}", out / f".old-onnx-{dead_pid}"]
    live = [out / f".staging-{os.getpid()}", out / f".old-tflite-{os.getppid()}", out / "onnx"]
    for folder in stale + live:
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "f").write_text("x")
    assert sorted(remove_stale_staging(out)) == sorted(stale)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in live)
