"""Tiny ONNX models with known outputs, built in the tests (no trained weights needed)."""

import onnx
from onnx import TensorProto, helper


def band_logit_model(path, in_channels, out_channels=2, logit_channel=1, static_size=None, source_band=0):
    """Output logits: channel `logit_channel` = input band `source_band`, every other channel 0.

    With softmax over two channels, P(class 1) = sigmoid(band value): known exactly per pixel.
    """
    rows = cols = static_size if static_size else None
    input_info = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", in_channels, rows or "H", cols or "W"])
    output_info = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", out_channels, rows or "H", cols or "W"])
    constants = [
        helper.make_tensor("starts", TensorProto.INT64, [1], [source_band]),
        helper.make_tensor("ends", TensorProto.INT64, [1], [source_band + 1]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
    ]
    nodes = [
        helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["band"]),
        helper.make_node("Mul", ["band", "zero"], ["zeros"]),
        helper.make_node("Concat", ["band" if k == logit_channel else "zeros" for k in range(out_channels)],
                         ["output"], axis=1),
    ]
    graph = helper.make_graph(nodes, "band_logit", [input_info], [output_info], initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
