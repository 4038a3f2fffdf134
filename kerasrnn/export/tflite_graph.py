"""What both hand-written TFLite graphs share: a flatbuffer writer and the token prelude.

The head that both end in is in tflite_head, above the linear path it calls.

The graphs are written with the schema's generated Python classes (shipped in mediapipe), so
nothing beyond builtin ops can slip in; tflite.check_mobile_ready checks the result anyway.
"""
from __future__ import annotations

import flatbuffers
import numpy as np
from mediapipe.tasks.metadata import schema_py_generated as T

from kerasrnn.tokenizer import UNKNOWN_ID

F32, F16, I32, BOOL, I8 = (T.TensorType.FLOAT32, T.TensorType.FLOAT16, T.TensorType.INT32, T.TensorType.BOOL,
                          T.TensorType.INT8)
Op = T.BuiltinOperator
Opt = T.BuiltinOptions


class GraphBuilder:
    """Minimal writer for a one-subgraph TFLite model."""

    def __init__(self, weight_dtype=np.float32, int8_tables: bool = False):
        self.buffers = [T.BufferT()]  # buffer 0 is the empty buffer by convention
        self.tensors, self.operators, self.codes = [], [], []
        self.weight_dtype = weight_dtype
        self.int8_tables = int8_tables

    def tensor(self, name, shape, dtype=F32, data=None, variable=False, signature=None) -> int:
        t = T.TensorT()
        t.name, t.shape, t.type, t.isVariable = name.encode(), list(shape), dtype, variable
        if signature is not None:
            t.shapeSignature = list(signature)
        buf = T.BufferT()
        if data is not None:
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        self.buffers.append(buf)
        t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def constant(self, name, array) -> int:
        """A constant int32 / float32 / bool tensor, its type from the numpy array's."""
        array = np.asarray(array)
        dtype = {np.dtype(np.int32): I32, np.dtype(np.float32): F32, np.dtype(bool): BOOL}[array.dtype]
        return self.tensor(name, array.shape, dtype, array)

    def weight(self, name, array, int8: bool = True) -> int:
        """A float32 weight; stored as float16 (the float16 file) or, for matrices, as int8 with one
        scale per row (the int8 file) plus a DEQUANTIZE op: the arithmetic stays float.
        int8=False: a matrix that must not be rounded to 8 bits (it stays float32 in the int8 file)."""
        array = np.asarray(array, np.float32)
        if self.weight_dtype == np.int8 and array.ndim == 2 and int8:
            q, scale = quantize_rows(array)
            stored = self.tensor(name + "/int8", array.shape, I8, q)
            params = T.QuantizationParametersT()
            params.scale, params.zeroPoint, params.quantizedDimension = (
                [float(v) for v in scale[:, 0]], [0] * len(scale), 0)
            self.tensors[stored].quantization = params
            out = self.tensor(name, array.shape)
            self.op(Op.DEQUANTIZE, [stored], [out])
            return out
        if self.weight_dtype == np.float16:
            half = self.tensor(name + "/fp16", array.shape, F16, array.astype(np.float16))
            out = self.tensor(name, array.shape)
            self.op(Op.DEQUANTIZE, [half], [out])
            return out
        return self.tensor(name, array.shape, F32, array)

    def lookup(self, name, table, ids, out_shape) -> int:
        """GATHER rows of a [vocab, width] table by `ids` -> float32 `out_shape` ([*ids.shape, width]).

        With int8_tables the table is stored as int8 with one scale per row, and each looked-up
        row is scaled back to float after the lookup: the tables are nearly all of a file's bytes,
        while the arithmetic stays in float. A scale per row keeps a rare word's small row as
        precise as a frequent word's large one (one scale per column, tried on the bag path's
        table, flipped 4x more top labels of a 20-class model). The scales are float16 (their
        rounding, 2^-11, is far below int8's), looked up and then dequantized."""
        out = self.tensor(name, out_shape)
        gather = options(T.GatherOptionsT, axis=0)
        if not self.int8_tables:
            self.op(Op.GATHER, [self.weight(name + "/table", table), ids], [out], Opt.GatherOptions, gather)
            return out
        q, scale = quantize_rows(table, np.float16)
        scale_shape = [*out_shape[:-1], 1]
        rows_q, rows_f, scales_16, scales = (
            self.tensor(name + "/rows_int8", out_shape, I8), self.tensor(name + "/rows", out_shape),
            self.tensor(name + "/row_scales_fp16", scale_shape, F16), self.tensor(name + "/row_scales", scale_shape))
        self.op(Op.GATHER, [self.tensor(name + "/table_int8", q.shape, I8, q), ids], [rows_q], Opt.GatherOptions, gather)
        self.op(Op.CAST, [rows_q], [rows_f], Opt.CastOptions, options(T.CastOptionsT, inDataType=I8, outDataType=F32))
        self.op(Op.GATHER, [self.tensor(name + "/table_scales", scale.shape, F16, scale), ids],
                [scales_16], Opt.GatherOptions, gather)
        self.op(Op.DEQUANTIZE, [scales_16], [scales])
        self.op(Op.MUL, [rows_f, scales], [out], Opt.MulOptions, T.MulOptionsT())
        return out

    def op(self, builtin, inputs, outputs, options_type=0, options=None) -> None:
        index = next((i for i, c in enumerate(self.codes) if c.builtinCode == builtin), None)
        if index is None:
            code = T.OperatorCodeT()
            code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
            self.codes.append(code)
            index = len(self.codes) - 1
        o = T.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = index, list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.operators.append(o)

    def finish(self, inputs, outputs, description: str) -> bytes:
        sub = T.SubGraphT()
        sub.tensors, sub.operators, sub.inputs, sub.outputs, sub.name = (
            self.tensors, self.operators, list(inputs), list(outputs), b"main")
        model = T.ModelT()
        model.version, model.description = 3, description.encode()
        model.subgraphs, model.buffers, model.operatorCodes = [sub], self.buffers, self.codes
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), b"TFL3")
        return bytes(builder.Output())


def quantize_rows(table: np.ndarray, scale_dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """[vocab, width] float -> (int8 [vocab, width], scales [vocab, 1] as scale_dtype); row ~= q * scale.
    The rows are rounded against the scales as stored, so a float16 scale costs no extra error."""
    table = np.asarray(table, np.float64)
    peak = np.abs(table).max(axis=1, keepdims=True)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(scale_dtype)
    scale = np.where(scale > 0, scale, np.ones_like(scale))  # a peak too small for the dtype: q = 0
    q = np.clip(np.rint(table / scale.astype(np.float64)), -127, 127).astype(np.int8)
    return q, scale


def options(cls, **fields):
    """A schema options object with these fields set."""
    obj = cls()
    for k, v in fields.items():
        setattr(obj, k, v)
    return obj


def token_prelude(g: GraphBuilder, max_len: int, vocab: int):
    """tokens int32 [1, max_len] in -> (tokens, ids, valid, length).

    ids: tokens outside [0, vocab) read as <UNKNOWN>, as in the ONNX and SavedModel exports;
    valid: bool [1, max_len], the non-pad ids; length: int32 [1], their count. The tokenizer
    post-pads, so the real tokens are the first `length` ids.
    """
    tokens = g.tensor("tokens", [1, max_len], I32)
    zero = g.constant("zero", np.array(0, np.int32))
    ge0, ltv, ok, ids = (g.tensor(n, [1, max_len], t) for n, t in
                         (("id_ge0", BOOL), ("id_ltv", BOOL), ("id_ok", BOOL), ("ids", I32)))
    g.op(Op.GREATER_EQUAL, [tokens, zero], [ge0])
    g.op(Op.LESS, [tokens, g.constant("vocab", np.array(vocab, np.int32))], [ltv])
    g.op(Op.LOGICAL_AND, [ge0, ltv], [ok])
    g.op(Op.SELECT_V2, [ok, tokens, g.constant("unknown", np.array(UNKNOWN_ID, np.int32))], [ids])
    valid, valid_i, length = (g.tensor("valid", [1, max_len], BOOL), g.tensor("valid_i", [1, max_len], I32),
                              g.tensor("length", [1], I32))
    g.op(Op.NOT_EQUAL, [ids, zero], [valid])
    g.op(Op.CAST, [valid], [valid_i], Opt.CastOptions, options(T.CastOptionsT, inDataType=BOOL, outDataType=I32))
    g.op(Op.SUM, [valid_i, g.constant("axis_1", np.array([1], np.int32))], [length], Opt.ReducerOptions,
         options(T.ReducerOptionsT, keepDims=False))
    return tokens, ids, valid, length
