"""Python shape functions agree with ONNX shape inference, and refuse what they cannot tell."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnx_graph.shape_functions import output_shapes


def _onnx_inferred(op_type: str, shapes, attributes: dict, constants: dict) -> list[list[int]]:
    inputs, initializers, names = [], [], []
    for index, dims in enumerate(shapes):
        name = f"in{index}"
        names.append(name)
        if index in constants:
            initializers.append(onnx.numpy_helper.from_array(constants[index], name))
        else:
            inputs.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims))
    node = onnx.helper.make_node(op_type, names, ["out"], **attributes)
    graph = onnx.helper.make_graph(
        [node], "g", inputs, [onnx.helper.make_empty_tensor_value_info("out")], initializers
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)])
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    return [[d.dim_value for d in dims]]


def _ours(op_type: str, shapes, attributes: dict, constants: dict):
    node = onnx.helper.make_node(
        op_type, [f"in{i}" for i in range(len(shapes))], ["out"], **attributes
    )
    ir_node = ir.serde.deserialize_node(node)

    def constant(index: int):
        return constants.get(index)

    input_shapes = [
        list(constants[i].shape) if i in constants else list(dims) for i, dims in enumerate(shapes)
    ]
    return output_shapes(ir_node, input_shapes, constant)


CASES = [
    ("Softmax", [[2, 12, 197, 197]], {"axis": -1}, {}),
    ("Gelu", [[1, 197, 3072]], {}, {}),
    ("Mul", [[2, 12, 197, 64], [1]], {}, {}),
    ("Add", [[3, 1, 5], [4, 1]], {}, {}),
    ("Div", [[7], [2, 3, 7]], {}, {}),
    ("MatMul", [[2, 12, 197, 64], [2, 12, 64, 197]], {}, {}),
    ("MatMul", [[5, 1, 3, 4], [6, 4, 2]], {}, {}),  # batch dims broadcast
    ("MatMul", [[4], [3, 4, 2]], {}, {}),  # 1-D first operand
    ("MatMul", [[3, 4], [4]], {}, {}),  # 1-D second operand
    ("Transpose", [[2, 197, 3, 12, 64]], {"perm": [2, 0, 3, 1, 4]}, {}),
    ("Transpose", [[2, 3, 4]], {}, {}),  # default: reversed
    ("Reshape", [[2, 197, 768], [4]], {}, {1: np.array([2, 197, 12, 64], dtype=np.int64)}),
    ("Reshape", [[2, 197, 768], [3]], {}, {1: np.array([0, -1, 64], dtype=np.int64)}),
    ("Reshape", [[24, 197, 64], [3]], {}, {1: np.array([2, 12, -1], dtype=np.int64)}),
    ("Reshape", [[0, 5], [2]], {"allowzero": 1}, {1: np.array([5, 0], dtype=np.int64)}),
]


@pytest.mark.parametrize(("op_type", "shapes", "attributes", "constants"), CASES)
def test_each_function_equals_onnx_inference(op_type, shapes, attributes, constants) -> None:
    expected = _onnx_inferred(op_type, shapes, attributes, constants)
    assert _ours(op_type, shapes, attributes, constants) == expected


@pytest.mark.parametrize(
    ("op_type", "shapes", "attributes", "constants"),
    [
        ("MatMul", [[2, 3], [4, 5]], {}, {}),  # contracted sizes differ
        ("Add", [[2, 3], [4]], {}, {}),  # not broadcastable
        ("Reshape", [[2, 6], [2]], {}, {1: np.array([5, -1], dtype=np.int64)}),
        ("Reshape", [[2, 6], [2]], {}, {1: np.array([-1, -1], dtype=np.int64)}),
        ("Reshape", [[2, 6], [2]], {}, {1: np.array([4, 4], dtype=np.int64)}),
        ("Transpose", [[2, 3]], {"perm": [0, 0]}, {}),
        ("Reshape", [[2, 6], [2]], {}, {}),  # target not a constant
        ("Conv", [[1, 3, 8, 8], [4, 3, 3, 3]], {}, {}),  # no function for it
    ],
)
def test_what_a_function_cannot_tell_is_left_to_onnx(
    op_type, shapes, attributes, constants
) -> None:
    assert _ours(op_type, shapes, attributes, constants) is None


def test_an_unknown_input_shape_gives_none() -> None:
    node = ir.serde.deserialize_node(onnx.helper.make_node("Mul", ["a", "b"], ["c"]))
    assert output_shapes(node, [[2, 3], None], lambda index: None) is None
    custom = ir.serde.deserialize_node(onnx.helper.make_node("Relu", ["a"], ["b"], domain="x.y"))
    assert output_shapes(custom, [[2, 3]], lambda index: None) is None
