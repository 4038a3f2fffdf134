"""Parity: the check passes on good exports, fails on a perturbed one, and says how (typed failures)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import TINY, run_cli  # noqa: F401


@pytest.mark.slow
def test_check_parity_passes_and_writes_report(tiny_exports):
    proc = run_cli(["tools/check_parity.py", "--exports", str(tiny_exports)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads((tiny_exports / "parity.json").read_text())
    assert report["passed"]
    routes = {(r["artifact"], r["route"]) for r in report["results"]}
    assert ("tflite/model.tflite", "mediapipe-text") in routes and ("savedmodel", "text@batch32") in routes
    assert ("onnx/model.onnx", "ids@batch1") in routes and ("onnx/model.onnx", "ids@batch32") in routes
    for r in report["results"]:
        if r["kind"] == "float32":
            assert r["max_abs"] <= 1e-5 and r["agreement"] == 1.0


def _perturb_onnx(path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.name == "dense_bias":
            arr = numpy_helper.to_array(init).copy()
            arr[0] += 0.05  # one weight, slightly off
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(path))


@pytest.mark.slow
def test_check_parity_fails_on_a_perturbed_weight(tmp_path, tiny_exports):
    bad = tmp_path / "exports"
    shutil.copytree(tiny_exports, bad, ignore=shutil.ignore_patterns("tflite", "savedmodel"))
    _perturb_onnx(bad / "onnx/model.onnx")
    proc = run_cli(["tools/check_parity.py", "--exports", str(bad), "--limit", "60"])
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "onnx/model.onnx" in proc.stderr and "max |dp|" in proc.stdout
    # the one-line message names the artifact, the route, the rule, the measured value and the limit
    (line,) = [l for l in proc.stderr.splitlines() if l.startswith("parity failed:")]
    assert "onnx/model.onnx (ids@batch1): max |dp| " in line and "> 1e-05" in line and "Traceback" not in proc.stderr
    proc = run_cli(["tools/check_parity.py", "--exports", str(bad), "--verify-manifest"])
    assert proc.returncode == 1 and "modified: onnx/model.onnx" in proc.stdout


# --- typed failures, in-process ---------------------------------------------------------------

def _artifact(quantization="float32", fmt="onnx", name="onnx/model.onnx"):
    from pathlib import Path

    from kerasrnn.export.parity import Artifact

    return Artifact(name, Path("/nowhere") / name, fmt, quantization)


def test_a_result_over_tolerance_carries_each_broken_rule_with_measured_value_and_limit():
    from kerasrnn.export.parity import TOLERANCES, _compare, format_row

    rng = np.random.default_rng(0)
    ref = rng.dirichlet([1, 1], size=200).astype(np.float32)
    y = ref.argmax(1)
    same = _compare(_artifact(), "ids@batch1", ref.copy(), ref, y, 10)
    assert same.passed and same.failures == [] and same.reasons == []

    probs = ref.copy()
    probs[:, 0] += 0.003  # every row off by 0.003, below 1e-5 nowhere
    flip = np.argsort(np.abs(ref[:, 0] - ref[:, 1]))[:10]  # the 10 closest calls flip (5%)
    probs[flip] = probs[flip][:, ::-1]
    r = _compare(_artifact(), "ids@batch32", probs, ref, y, 10)
    by_rule = {f.rule: f for f in r.failures}
    assert set(by_rule) == {"max_abs", "min_agreement", "max_acc_drop"} and not r.passed
    assert by_rule["max_abs"].measured == pytest.approx(np.abs(probs - ref).max(), rel=1e-6)
    assert by_rule["max_abs"].limit == TOLERANCES["float32"]["max_abs"]
    assert by_rule["min_agreement"].measured == pytest.approx(1 - 10 / 200)
    assert by_rule["max_acc_drop"].measured == pytest.approx(5.0)
    for f in r.failures:
        assert (f.artifact, f.route, f.format, f.quantization) == ("onnx/model.onnx", "ids@batch32", "onnx", "float32")
        assert f.reason() in format_row(r) and str(f).startswith("onnx/model.onnx (ids@batch32): ")
    assert r.reasons == [f.reason() for f in r.failures]
    assert "max |dp| " in r.reasons[0] and r.reasons[0].endswith("> 1e-05")

    # a float16 file has no max |dp| rule: the same probabilities break only the other two
    r16 = _compare(_artifact("float16", "tflite", "tflite/model_float16.tflite"), "ids@batch1", probs, ref, y, 10)
    assert {f.rule for f in r16.failures} == {"min_agreement", "max_acc_drop"}


def test_parity_failed_is_a_parity_error_whose_message_names_every_failure():
    from kerasrnn.errors import ParityError, cli_main
    from kerasrnn.export.parity import Failure, ParityFailed

    failures = [Failure("tflite/model_int8.tflite", "mediapipe-text", "min_agreement", 0.97, 0.99, "tflite", "int8"),
                Failure("onnx/model.onnx", "ids@batch1", "max_abs", 0.0123, 1e-5, "onnx", "float32")]
    err = ParityFailed(failures, lead="2 check(s): ", tail=" -- nothing changed")
    assert isinstance(err, ParityError) and err.failures == failures
    assert str(err) == ("2 check(s): tflite/model_int8.tflite (mediapipe-text): argmax agreement 0.9700 < 0.99; "
                        "onnx/model.onnx (ids@batch1): max |dp| 1.23e-02 > 1e-05 -- nothing changed")

    def main(argv):
        raise err
    assert cli_main(main) == 1


def test_export_names_the_failed_quantized_variant_from_the_typed_failures(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from kerasrnn.export import parity
    from kerasrnn.export.core import parity_gate

    entries = {"tflite": {"model.tflite": {"path": "tflite/model.tflite", "quantization": "float32"},
                          # named like float16, recorded as int8: the record decides
                          "model_float16.tflite": {"path": "tflite/model_float16.tflite", "quantization": "int8"}}}
    (tmp_path / "tflite").mkdir()
    for name in entries["tflite"]:
        (tmp_path / "tflite" / name).write_bytes(b"x")
    seen = {}

    def fake_check(model, tokenizer, labels, artifacts, *args, **kwargs):
        seen["artifacts"] = artifacts
        results = []
        for a in artifacts:
            r = parity.Result(a.name, str(a.path), a.quantization, "ids@batch1", 1, 0.0, 0.0, 1.0, None, None, 1)
            if a.quantization == "int8":
                r.failures = [parity.Failure(a.name, "ids@batch1", "min_agreement", 0.9, 0.99, a.format, a.quantization)]
                r.reasons = [f.reason() for f in r.failures]
            r.passed = not r.failures
            results.append(r)
        return results

    monkeypatch.setattr(parity, "check", fake_check)
    context = SimpleNamespace(model=None, tokenizer=None, labels=[], texts=[], text_labels=[],
                              quantize=["float16", "dynamic", "int8"])
    with pytest.raises(parity.ParityFailed) as err:
        parity_gate(context, tmp_path, entries, tmp_path / "out", log=lambda line: None)
    assert [(a.name, a.quantization) for a in seen["artifacts"]] == \
        [("tflite/model.tflite", "float32"), ("tflite/model_float16.tflite", "int8")]
    assert [f.quantization for f in err.value.failures] == ["int8"]
    assert str(err.value).endswith("; to export without it: --quantize float16,dynamic")
    assert "tflite/model_float16.tflite (ids@batch1): argmax agreement 0.9000 < 0.99" in str(err.value)


def test_artifacts_come_from_the_manifest_entries_and_missing_files_are_left_out(tmp_path):
    from kerasrnn.export.parity import artifacts_from_entries, artifacts_from_manifest

    for rel in ("savedmodel/saved_model.pb", "onnx/model.onnx", "tflite/model_dynamic.tflite"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "tflite" / "stray_int8.tflite").write_bytes(b"x")  # not in the manifest: not checked
    artifacts = {"tflite": {"source_run": "r", "model_dynamic.tflite": {"path": "tflite/model_dynamic.tflite",
                                                                        "quantization": "dynamic", "graph": "g"},
                            "model.tflite": {"path": "tflite/model.tflite", "quantization": "float32"}},
                 "onnx": {"source_run": "r", "path": "onnx/model.onnx"},
                 "savedmodel": {"source_run": "r", "path": "savedmodel"}}
    found = artifacts_from_entries(tmp_path, artifacts)
    assert [(a.name, a.format, a.quantization, a.graph) for a in found] == [
        ("savedmodel", "savedmodel", "float32", None), ("onnx/model.onnx", "onnx", "float32", None),
        ("tflite/model_dynamic.tflite", "tflite", "dynamic", "g")]
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": artifacts}))
    assert artifacts_from_manifest(tmp_path) == found
