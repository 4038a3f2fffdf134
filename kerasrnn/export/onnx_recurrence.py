"""The recurrence of the native ONNX graph (kerasrnn.export.onnx_export): the RNN operator per layer,
the Scan that replaces it on batches of SCAN_FROM_BATCH or more (one forward layer), and the poolings
of the operator's outputs. Each function returns (nodes, initializers) over the graph's names:
"embedded" [B, T, E], "valid" [B, T], "seq_lens" [B], "ids" [B, T].
"""
from __future__ import annotations

import numpy as np

SCAN_POOLINGS = ("max", "mean", "last")  # what scan_layer pools; another pooling keeps the RNN operator
SCAN_FROM_BATCH = 8  # measured crossover (this VM, SMS lengths): batch 8 130 us RNN op vs 120 us Scan


def rnn_operator_layers(layers, units: int, bidirectional: bool):
    """"embedded" [B, T, E] -> the RNN operator per layer, "x_<layers>" [T, B, W] and "Yh_<last>"."""
    from onnx import helper, numpy_helper

    nodes = [helper.make_node("Transpose", ["embedded"], ["x_0"], perm=[1, 0, 2])]         # [T, B, E]
    inits = []
    x = "x_0"
    for i, directions in enumerate(layers):
        # Keras: h = tanh(x K + h R + b); ONNX: h = tanh(x W^T + h R^T + Wb + Rb). ONNX's reverse
        # direction runs each sequence from its own last real step (sequence_lens), as Keras's
        # backward layer does, and both directions output 0 past a sequence's length.
        stack = lambda arrays: np.stack(arrays).astype(np.float32)  # noqa: E731
        inits += [numpy_helper.from_array(stack([k.T for k, _, _ in directions]), f"W_{i}"),
                  numpy_helper.from_array(stack([r.T for _, r, _ in directions]), f"R_{i}"),
                  numpy_helper.from_array(stack([np.concatenate([b, np.zeros_like(b)]) for _, _, b in directions]),
                                          f"B_{i}")]
        nodes.append(helper.make_node("RNN", [x, f"W_{i}", f"R_{i}", f"B_{i}", "seq_lens"], [f"Y_{i}", f"Yh_{i}"],
                                      hidden_size=units, activations=["Tanh"] * len(directions), name=f"rnn_{i}",
                                      direction="bidirectional" if bidirectional else "forward"))
        if bidirectional:  # Y [T, 2, B, H] -> [T, B, 2H], forward first as Keras concatenates
            nodes += [helper.make_node("Transpose", [f"Y_{i}"], [f"Y_{i}_t"], perm=[0, 2, 1, 3]),
                      helper.make_node("Reshape", [f"Y_{i}_t", "shape_tb_"], [f"x_{i + 1}"])]
        else:
            nodes.append(helper.make_node("Squeeze", [f"Y_{i}", "axis1"], [f"x_{i + 1}"]))  # [T, B, H]
        x = f"x_{i + 1}"
    if bidirectional:
        inits.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape_tb_"))
    return nodes, inits


PAST_END = -1e4  # an input product past a text's end on the max-pooling Scan (see scan_layer)


def is_identity(kernel: np.ndarray) -> bool:
    """Whether a first-layer kernel is the identity (model.export_weights folded it into the table)."""
    return kernel.shape[0] == kernel.shape[1] and np.array_equal(kernel, np.eye(kernel.shape[0], dtype=kernel.dtype))


def scan_layer(weights, units: int, pooling: str, padding_saturates: bool = False):
    """One forward layer as a Scan over the steps of "embedded" [B, T, E] (axis 1) -> "features_scan":
    per step h = tanh(x_t + h R), pooled as it goes (max; for mean, a masked sum; for last, the
    final state, held past each text's end as Keras does). The input products x K + b of every step are
    one MatMul before it (none when the table holds them already: K is then the identity).

    Max pooling needs no mask inside the loop: the inputs past each text's end are PAST_END, so
    those steps output tanh(-1e4 + h R) = -1 exactly, which never exceeds a real step's output
    (tanh is at least -1). Each step is then MatMul, Add, Tanh, Max (a Where per step was a fifth
    of the Scan's time at batch 64). A row without tokens starts its pool at 0 (Keras pools it to
    0), the others at -2, below any output. `padding_saturates`: the table's <PAD> row already
    holds PAST_END and its bias (build_native), so neither a bias Add nor a Where over
    [B, T, H] runs before the loop (together as long as the loop itself at batch 64)."""
    from onnx import TensorProto, helper, numpy_helper

    kernel, recurrent, bias = weights
    inits = [numpy_helper.from_array(np.asarray(recurrent, np.float32), "scan_recurrent"),
             numpy_helper.from_array(np.asarray(bias, np.float32), "scan_bias"),
             numpy_helper.from_array(np.array([units], np.int64), "scan_units"),
             numpy_helper.from_array(np.zeros(1, np.float32), "scan_zero_f"),
             numpy_helper.from_array(np.full(1, -2.0 if pooling == "max" else 0.0, np.float32), "scan_pool_start"),
             numpy_helper.from_array(np.array([2], np.int64), "scan_axis2"),
             numpy_helper.from_array(np.array(1.0, np.float32), "scan_one_f")]
    x = "embedded"
    nodes = []
    if not is_identity(kernel):
        inits.append(numpy_helper.from_array(np.asarray(kernel, np.float32), "scan_kernel"))
        nodes.append(helper.make_node("MatMul", ["embedded", "scan_kernel"], ["scan_x_kernel"]))
        x = "scan_x_kernel"
    if padding_saturates:
        nodes.append(helper.make_node("Identity", [x], ["scan_x"]))
    else:
        nodes.append(helper.make_node("Add", [x, "scan_bias"], ["scan_x_all"]))                   # [B, T, H]
    nodes += [helper.make_node("Unsqueeze", ["valid", "scan_axis2"], ["scan_valid"]),             # [B, T, 1]
              helper.make_node("Shape", ["ids"], ["scan_batch"], end=1),
              helper.make_node("Concat", ["scan_batch", "scan_units"], ["scan_state_shape"], axis=0),
              helper.make_node("Expand", ["scan_zero_f", "scan_state_shape"], ["scan_h0"])]
    step = [helper.make_node("MatMul", ["h_in", "scan_recurrent"], ["h_r"]),
            helper.make_node("Add", ["h_r", "x_t"], ["h_pre"])]
    if pooling == "max":
        inits.append(numpy_helper.from_array(np.array(PAST_END, np.float32), "scan_past_end"))
        if not padding_saturates:
            nodes.append(helper.make_node("Where", ["scan_valid", "scan_x_all", "scan_past_end"], ["scan_x"]))
        nodes += [helper.make_node("Greater", ["seq_lens", "zero_i32"], ["scan_has_tokens"]),
                  helper.make_node("Unsqueeze", ["scan_has_tokens", "axis1"], ["scan_has_tokens_col"]),  # [B, 1]
                  helper.make_node("Where", ["scan_has_tokens_col", "scan_pool_start", "scan_zero_f"], ["scan_p_row"]),
                  helper.make_node("Expand", ["scan_p_row", "scan_state_shape"], ["scan_p0"])]
        step += [helper.make_node("Tanh", ["h_pre"], ["h_out"]),
                 helper.make_node("Max", ["p_in", "h_out"], ["p_out"])]
        scan_inputs = ["scan_x"]
    else:
        nodes.append(helper.make_node("Expand", ["scan_pool_start", "scan_state_shape"], ["scan_p0"]))
        step += [helper.make_node("Tanh", ["h_pre"], ["h_new"]),
                 helper.make_node("Where", ["valid_t", "h_new", "h_in"], ["h_out"])]
        scan_inputs = ["scan_x_all", "scan_valid"]
    if pooling == "mean":
        step += [helper.make_node("Where", ["valid_t", "h_out", "scan_zero_f"], ["h_real"]),
                 helper.make_node("Add", ["p_in", "h_real"], ["p_out"])]
    elif pooling == "last":
        step.append(helper.make_node("Identity", ["p_in"], ["p_out"]))
    # Shapes declared: onnxruntime 1.20 refuses a Scan body whose outputs have none.
    f = lambda name, width=units, t=TensorProto.FLOAT: helper.make_tensor_value_info(name, t, ["batch", width])  # noqa: E731
    body_inputs = [f("h_in"), f("p_in"), f("x_t")] + ([f("valid_t", 1, TensorProto.BOOL)] if pooling != "max" else [])
    body = helper.make_graph(step, "scan_step", body_inputs, [f("h_out"), f("p_out")])
    nodes.append(helper.make_node("Scan", ["scan_h0", "scan_p0"] + scan_inputs, ["scan_h", "scan_p"], body=body,
                                  num_scan_inputs=len(scan_inputs), scan_input_axes=[1] * len(scan_inputs)))
    if pooling == "max":
        nodes.append(helper.make_node("Identity", ["scan_p"], ["features_scan"]))
    elif pooling == "mean":
        nodes += [helper.make_node("Cast", ["seq_lens"], ["scan_lens_f"], to=TensorProto.FLOAT),
                  helper.make_node("Unsqueeze", ["scan_lens_f", "axis1"], ["scan_lens_col"]),
                  helper.make_node("Max", ["scan_lens_col", "scan_one_f"], ["scan_lens_safe"]),
                  helper.make_node("Div", ["scan_p", "scan_lens_safe"], ["features_scan"])]
    else:
        nodes.append(helper.make_node("Identity", ["scan_h"], ["features_scan"]))
    return nodes, inits


# Poolings over the RNN outputs x [T, B, W] (0 past each sequence's length) and the last layer's
# final states h ([directions, B, H]) -> "features" [B, W]: (nodes, initializers) per name.

def _pool_last(x: str, h: str, bidirectional: bool):
    from onnx import helper, numpy_helper

    if bidirectional:  # Yh [2, B, H] -> [B, 2H]
        return ([helper.make_node("Transpose", [h], ["h_t"], perm=[1, 0, 2]),
                 helper.make_node("Reshape", ["h_t", "shape_b_"], ["features"])],
                [numpy_helper.from_array(np.array([0, -1], np.int64), "shape_b_")])
    return [helper.make_node("Squeeze", [h, "axis0"], ["features"])], []  # [B, H]


def _pool_mean(x: str, h: str, bidirectional: bool):
    from onnx import TensorProto, helper, numpy_helper

    # RNN outputs past each sequence's length are 0, so the sum over time is the valid sum.
    return ([helper.make_node("ReduceSum", [x, "axis0"], ["y_sum"], keepdims=0),
             helper.make_node("Cast", ["seq_lens"], ["lens_f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["lens_f", "axis1"], ["lens_col"]),
             helper.make_node("Max", ["lens_col", "one_f"], ["lens_safe"]),
             helper.make_node("Div", ["y_sum", "lens_safe"], ["features"])],
            [numpy_helper.from_array(np.array(1.0, np.float32), "one_f")])


def _pool_max(x: str, h: str, bidirectional: bool):
    from onnx import TensorProto, helper, numpy_helper

    if bidirectional:
        # The Keras model lifts padded steps out of the max with -2 (below any tanh output) and
        # pools a row without tokens to 0 (see kerasrnn.model).
        return ([helper.make_node("Transpose", ["valid"], ["valid_t"], perm=[1, 0]),          # [T, B]
                 helper.make_node("Unsqueeze", ["valid_t", "axis_neg1"], ["valid_e"]),        # [T, B, 1]
                 helper.make_node("Where", ["valid_e", x, "minus_two"], ["y_masked"]),
                 helper.make_node("ReduceMax", ["y_masked"], ["y_max"], axes=[0], keepdims=0),
                 helper.make_node("Greater", ["seq_lens", "zero_i32"], ["has_tokens"]),
                 helper.make_node("Cast", ["has_tokens"], ["has_tokens_f"], to=TensorProto.FLOAT),
                 helper.make_node("Unsqueeze", ["has_tokens_f", "axis1"], ["has_tokens_col"]),
                 helper.make_node("Mul", ["y_max", "has_tokens_col"], ["features"])],
                [numpy_helper.from_array(np.array([-1], np.int64), "axis_neg1"),
                 numpy_helper.from_array(np.array(-2.0, np.float32), "minus_two")])
    # Keras repeats the last valid output over the padding, so the max over valid steps equals
    # the max over all steps there; here padded outputs are 0, so mask them to the last state.
    return ([helper.make_node("Transpose", ["valid"], ["valid_t"], perm=[1, 0]),          # [T, B]
             helper.make_node("Unsqueeze", ["valid_t", "axis_neg1"], ["valid_e"]),        # [T, B, 1]
             helper.make_node("Squeeze", [h, "axis0"], ["h_last"]),
             helper.make_node("Where", ["valid_e", x, "h_last"], ["y_masked"]),
             helper.make_node("ReduceMax", ["y_masked"], ["features"], axes=[0], keepdims=0)],
            [numpy_helper.from_array(np.array([-1], np.int64), "axis_neg1")])


POOLS = {"last": _pool_last, "max": _pool_max, "mean": _pool_mean}
