"""One interface over every format a model ships in: Keras, SavedModel, ONNX, TFLite, MediaPipe.

Each runtime answers `predict_ids(ids)` (int32 [n, max_len] -> float32 [n, classes]); those that
carry their own tokenizer (SavedModel's `serve_text`, MediaPipe) also answer `predict_texts`.
Used by `python -m kerasrnn.predict` and by the parity check, so both see the same behaviour.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kerasrnn import artifacts
from kerasrnn.errors import UserError
from kerasrnn.tokenizer import Tokenizer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class Runtime:
    name = "runtime"
    tokenizer: Tokenizer | None = None
    labels: list[str] = []
    max_len: int = 0

    def predict_ids(self, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_texts(self, texts: list[str]) -> np.ndarray:
        """Raw text in: through the runtime's own tokenizer when it has one, else ours."""
        if self.tokenizer is None:
            raise UserError(f"{self.name}: no tokenizer found for this model; pass a run folder or export folder")
        return self.predict_ids(self.tokenizer.encode(texts))

    def check_ids(self, ids: np.ndarray) -> np.ndarray:
        """Raw token ids from a caller: right shape, integer, within the vocabulary, or a clear error."""
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[1] != self.max_len:
            raise UserError(f"{self.name}: token ids must have shape [batch, {self.max_len}], got {list(ids.shape)}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise UserError(f"{self.name}: token ids must be integers, got {ids.dtype}")
        vocab = self.tokenizer.vocab_size if self.tokenizer else None
        if ids.size and (ids.min() < 0 or (vocab is not None and ids.max() >= vocab)):
            raise UserError(f"{self.name}: token ids must be in [0, {vocab}), got min {ids.min()} max {ids.max()}")
        return ids.astype(np.int32)


class KerasRuntime(Runtime):
    name = "keras"

    def __init__(self, model, tokenizer: Tokenizer | None, labels: list[str]):
        self.model, self.tokenizer, self.labels = model, tokenizer, labels
        self.max_len = int(model.input_shape[1])

    def predict_ids(self, ids):
        return np.asarray(self.model.predict(ids, batch_size=256, verbose=0), dtype=np.float32)


class SavedModelRuntime(Runtime):
    """The SavedModel's signatures run as TF Serving runs them: the graph in a Session, each call
    on the calling thread (Session::Run). Called through `tf.saved_model.load` instead, every call
    also pays eager function dispatch, about 300 us at batch 1 on a 2-core VM: more than the
    hand-built graph itself (#17)."""
    name = "savedmodel"

    def __init__(self, path: Path, threads: int = 0):
        import tensorflow as tf

        # intra-op threads: TensorFlow honours them only where it creates its pools (the first
        # session or eager call of the process); the bench sets tf.config.threading first.
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads)
        config.session_inter_op_thread_pool.add().num_threads = 1  # unused: calls run on the caller's thread
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        verbosity = tf.get_logger().level
        tf.get_logger().setLevel("ERROR")  # the v1 loader's deprecation notice: the Session API is what TF Serving uses
        try:
            with self.graph.as_default():
                signatures = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], str(path)).signature_def
            self.max_len = int(signatures["serving_default"].inputs["tokens"].tensor_shape.dim[1].size)
            self.ids_fn = self._callable(signatures["serving_default"], "tokens")
            self.text_fn = self._callable(signatures["serve_text"], "text") if "serve_text" in signatures else None
        except Exception as exc:
            self.session.close()
            raise UserError(f"{path}: cannot load SavedModel ({type(exc).__name__}); re-export it") from None
        finally:
            tf.get_logger().setLevel(verbosity)
        try:  # one call now: a file that loads but cannot run fails here, with this message
            self.ids_fn(np.zeros((1, self.max_len), np.int32))
        except tf.errors.OpError as exc:
            self.session.close()
            # e.g. Keras-graph SavedModels exported before kerasrnn tracked their variables: they
            # load in Python but miss them in a Session, as in TF Serving (tensorflow#72963)
            lines = [line.strip() for line in (exc.message or "").splitlines()
                     if line.strip() and not line.strip().endswith(":")]  # past "Graph execution error:"
            first = (lines[0].split(". ")[0] if lines else type(exc).__name__)[:160]
            raise UserError(f"{path}: this SavedModel does not run in a Session as TF Serving runs it "
                            f"({first}); re-export it with tools/export.py") from None
        self.labels, self.tokenizer = artifacts.savedmodel_extras(path)

    def _callable(self, signature, input_name: str):
        import tensorflow as tf

        feed = self.graph.get_tensor_by_name(signature.inputs[input_name].name)
        fetch = self.graph.get_tensor_by_name(signature.outputs["probabilities"].name)
        call = self.session.make_callable(fetch, [feed], accept_options=True)
        on_caller_thread = tf.compat.v1.RunOptions(inter_op_thread_pool=-1)
        return lambda value: call(value, options=on_caller_thread)

    def close(self) -> None:
        self.session.close()

    def predict_ids(self, ids):
        return self.ids_fn(np.asarray(ids, np.int32))

    def predict_texts(self, texts):
        if self.text_fn is None:
            return super().predict_texts(texts)
        return self.text_fn(np.array([text.encode() for text in texts], dtype=object))


class OnnxRuntime(Runtime):
    name = "onnx"

    def __init__(self, path: Path, threads: int = 0):
        import onnx
        import onnxruntime as ort

        path = Path(path)
        try:
            proto = onnx.load(str(path))
            onnx.checker.check_model(proto, full_check=True)  # before any session touches the file
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{path}: not a valid ONNX model ({first[:200]}); re-export it") from None
        meta = {p.key: p.value for p in proto.metadata_props}
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.max_len = int(self.session.get_inputs()[0].shape[1])
        self.labels, self.tokenizer = artifacts.onnx_extras(meta, path)
        self.metadata = meta

    def predict_ids(self, ids):
        return self.session.run(None, {self.input_name: np.asarray(ids, dtype=np.int32)})[0]


class TfliteRuntime(Runtime):
    """LiteRT interpreter; the files have a static batch of 1, so batches run row by row."""

    name = "tflite"

    def __init__(self, path: Path, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        path = Path(path)
        data = _read_model_bytes(path)
        try:
            self.interpreter = Interpreter(model_content=data, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"{path}: not a valid TFLite model ({str(exc).splitlines()[0][:200]})") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.output_scale, self.output_zero_point = self.output.get("quantization", (0.0, 0))
        self.max_len = int(self.input["shape"][1])
        self.labels, self.tokenizer = artifacts.tflite_extras(data, self.max_len, path)

    def predict_ids(self, ids):
        # Kept lean: at batch 1 a graph runs in tens of microseconds, so Python per call shows.
        interpreter, input_index, output_index = self.interpreter, self.input["index"], self.output["index"]
        ids = np.asarray(ids, dtype=np.int32)
        if len(ids) == 1:
            interpreter.set_tensor(input_index, ids)
            interpreter.invoke()
            out = interpreter.get_tensor(output_index)
        else:
            rows = []
            for row in ids:
                interpreter.set_tensor(input_index, row[None, :])
                interpreter.invoke()
                rows.append(interpreter.get_tensor(output_index)[0])
            out = np.array(rows).reshape(len(ids), int(self.output["shape"][-1]))
        if self.output_scale:  # a quantized output: back to probabilities
            return (out.astype(np.float32) - self.output_zero_point) * self.output_scale
        return out


class MediaPipeRuntime(Runtime):
    """MediaPipe Tasks TextClassifier: raw text in, as an Android / iOS / web app would call it."""

    name = "mediapipe"

    def __init__(self, path: Path):
        from mediapipe.tasks import python as mp_python
        from mediapipe.tasks.python import text as mp_text

        options = mp_text.TextClassifierOptions(
            base_options=mp_python.BaseOptions(model_asset_path=str(path)), max_results=-1)
        try:
            self.classifier = mp_text.TextClassifier.create_from_options(options)
        except Exception as exc:
            raise UserError(f"{path}: MediaPipe cannot load this model ({str(exc).splitlines()[0][:200]})") from None
        self.tflite = TfliteRuntime(path)
        self.labels, self.max_len, self.tokenizer = self.tflite.labels, self.tflite.max_len, None

    def predict_ids(self, ids):
        raise UserError("mediapipe: takes raw text only")

    def predict_texts(self, texts):
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for i, text in enumerate(texts):
            for cat in self.classifier.classify(text).classifications[0].categories:
                out[i, cat.index] = cat.score
        return out

    def close(self):
        self.classifier.close()


def _read_model_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None


def open_model(path: str | Path, threads: int = 0) -> Runtime:
    """Open a run folder, .keras file, SavedModel folder, .onnx or .tflite by what it is."""
    from kerasrnn.run import LATEST, RunInfo

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return SavedModelRuntime(path, threads)
    if path.is_dir() or path.name == LATEST:
        info = RunInfo.load(path)
        return KerasRuntime(info.load_model(), info.tokenizer, info.labels)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        from kerasrnn.run import load_keras_model

        model = load_keras_model(path)
        tokenizer, labels = None, []
        if (path.parent / "config.json").is_file():
            info = RunInfo.load(path.parent)
            tokenizer, labels = info.tokenizer, info.labels
        return KerasRuntime(model, tokenizer, labels)
    if suffix == ".onnx":
        return OnnxRuntime(path, threads)
    if suffix == ".tflite":
        return TfliteRuntime(path, threads or 1)
    raise UserError(f"{path}: unknown model type; pass a run folder, .keras, SavedModel folder, .onnx or .tflite")
