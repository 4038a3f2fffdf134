"""ONNX export: the file's contract, the Loop option, damaged files, the pooling choice."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import TINY, run_cli  # noqa: F401


@pytest.mark.slow
def test_onnx_contract(tiny_exports):
    import onnx

    model = onnx.load(str(tiny_exports / "onnx/model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "tokens" and inp.type.tensor_type.elem_type == onnx.TensorProto.INT32
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 24]
    assert out.name == "probabilities" and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.opset_import[0].version >= 17
    # Written at the lowest IR version opset 17 allows, so older runtimes and onnxruntime-web load it.
    assert model.ir_version == 8
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["labels"]) == ["ham", "spam"] and meta["max_len"] == "24"
    assert json.loads(meta["tokenizer"])["type"] == "regex" and meta["source_run"]
    # the RNN operator for small batches, a Scan for batches of 8 or more, picked by an If
    (choice,) = [n for n in model.graph.node if n.op_type == "If"]
    branches = {a.name: {n.op_type for n in a.g.node} for a in choice.attribute}
    assert "Scan" in branches["then_branch"] and "RNN" in branches["else_branch"]


@pytest.mark.slow
def test_loop_onnx_export_option(tmp_path, tiny_run):
    out = tmp_path / "exports"
    proc = run_cli(["tools/export.py", "--format", "onnx", "--onnx-impl", "loop", "--run", str(tiny_run),
                    "--out", str(out)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    import onnx

    model = onnx.load(str(out / "onnx/model.onnx"))
    assert "Loop" in {n.op_type for n in model.graph.node} or any(
        n.op_type == "Scan" for n in model.graph.node)
    assert model.ir_version == 8
    assert {p.key: p.value for p in model.metadata_props}["rnn_impl"] == "loop"


@pytest.mark.slow
def test_garbage_onnx_gets_one_line_error(tmp_path, tiny_exports):
    bad = tmp_path / "exports"
    shutil.copytree(tiny_exports, bad, ignore=shutil.ignore_patterns("tflite", "savedmodel"))
    data = (bad / "onnx/model.onnx").read_bytes()
    (bad / "onnx/model.onnx").write_bytes(data[: len(data) // 3])
    for args in (["tools/check_parity.py", "--exports", str(bad)],
                 ["-m", "kerasrnn.predict", "--model", str(bad / "onnx/model.onnx"), "hello"]):
        proc = run_cli(args)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        assert [l for l in proc.stderr.splitlines() if l.startswith("error:")] == \
            [l for l in proc.stderr.splitlines() if "model.onnx" in l]


def test_onnx_graph_refuses_an_unknown_pooling():
    from kerasrnn.export.onnx_export import build_native
    from kerasrnn.model import build_model

    config = {"vocab_size": 30, "num_classes": 2, "max_len": 8, "embed_dim": 4, "units": 4, "num_layers": 1,
              "dropout": 0.0, "pooling": "max", "bidirectional": False}
    model = build_model(**config)
    assert build_native(model, config).graph.node  # the same model and config build with a known pooling
    with pytest.raises(ValueError, match="not 'median'"):
        build_native(model, {**config, "pooling": "median"})
