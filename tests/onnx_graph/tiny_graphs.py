"""Tiny ONNX-text graphs, one per registered op rule, for the shared rule suite.

Every case is ``Conv(x) -> <snippet> -> Conv`` style: a producer conv ``p`` creates 8 channels
(value ``h``), the snippet turns ``h`` into ``t``, and a consumer conv reads ``t``. Parameters are
graph inputs whose names start with ``p_``; ``build_model`` turns them into random initializers.
"""

from __future__ import annotations

from onnx_graph.rules.elementwise import UNARY_OPS
from onnx_graph.rules.layout import REDUCE_OPS
from tests.onnx_graph.tiny_graph_builder import RuleCase, build_model, graph_text

__all__ = ["CASES", "RuleCase", "build_model", "case_for", "graph_text"]


def _unary(op: str, attrs: str = "") -> RuleCase:
    return RuleCase(op, f"t = {op}{attrs}(h)")


def _binary_const(op: str, shape: str = "float[8,1,1]", name: str = "p_c") -> RuleCase:
    return RuleCase(op, f"t = {op}(h, {name})", extra_params=f"{shape} {name}")


def _bool_round_trip(op: str, binary: bool) -> RuleCase:
    args = "hb, hb2" if binary else "hb"
    return RuleCase(
        op,
        f"""
        hb = Cast<to=9>(h)
        hb2 = Cast<to=9>(p_c)
        r = {op}({args})
        t = Cast<to=1>(r)
    """,
        extra_params="float[8,1,1] p_c",
    )


def _compare(op: str) -> RuleCase:
    return RuleCase(op, f"r = {op}(h, p_c)\n t = Cast<to=1>(r)", extra_params="float[8,1,1] p_c")


def _reduce_spatial(op: str) -> RuleCase:
    return RuleCase(
        op,
        f"""
        axes = Constant<value_ints=[2,3]>()
        t = {op}<keepdims=1>(h, axes)
    """,
        spatial=8,
        tail="y = Conv(t, p_w2)",
        output="float[N,5,1,1] y",
    )


# Ops needing an input domain, a type round trip or other attributes get hand-written cases.
_SPECIAL_UNARY = {
    "Log",
    "Sqrt",
    "Reciprocal",
    "Clip",
    "Dropout",
    "Cast",
    "CastLike",
    "IsNaN",
    "IsInf",
    "Not",
    "Swish",
    "LeakyRelu",
}
_SPECIAL_REDUCE = {"ReduceLogSum", "ArgMax", "ArgMin"}


def case_for(op_type: str) -> RuleCase:
    """The tiny graph of one op type (for tests that need a specific small model)."""
    return next(case for case in CASES if case.op_type == op_type)


CASES: list[RuleCase] = [
    *[_unary(op) for op in UNARY_OPS if op not in _SPECIAL_UNARY],
    RuleCase("Swish", "t = Swish(h)", opset=24),
    _unary("LeakyRelu", "<alpha=0.1>"),
    RuleCase("Log", "a = Abs(h)\n b = Add(a, p_one)\n t = Log(b)", extra_params="float p_one"),
    RuleCase("Sqrt", "a = Abs(h)\n t = Sqrt(a)"),
    RuleCase(
        "Reciprocal",
        "a = Abs(h)\n b = Add(a, p_one)\n t = Reciprocal(b)",
        extra_params="float p_one",
    ),
    RuleCase(
        "Clip",
        "lo = Constant<value_float=-0.5>()\n hi = Constant<value_float=0.5>()\n t = Clip(h, lo, hi)",
    ),
    RuleCase("Dropout", "t, m = Dropout(h)"),
    RuleCase("Cast", "a = Cast<to=10>(h)\n t = Cast<to=1>(a)"),
    RuleCase("CastLike", "a = Cast<to=10>(h)\n t = CastLike(a, h)"),
    RuleCase("IsNaN", "r = IsNaN(h)\n a = Cast<to=1>(r)\n t = Add(a, h)"),
    RuleCase("IsInf", "r = IsInf(h)\n a = Cast<to=1>(r)\n t = Add(a, h)"),
    _bool_round_trip("Not", binary=False),
    _bool_round_trip("And", binary=True),
    _bool_round_trip("Or", binary=True),
    _bool_round_trip("Xor", binary=True),
    *[_binary_const(op) for op in ("Add", "Sub", "Mul", "Max", "Min", "PRelu")],
    _binary_const("Div", name="p_pos_c"),
    RuleCase(
        "Pow",
        "a = Abs(h)\n b = Add(a, p_one)\n t = Pow(b, p_pos_e)",
        extra_params="float p_one, float[8,1,1] p_pos_e",
    ),
    RuleCase("Mean", "t = Mean(h, p_c, h)", extra_params="float[8,1,1] p_c"),
    RuleCase("Sum", "t = Sum(h, p_c, h)", extra_params="float[8,1,1] p_c"),
    RuleCase("Mod", "t = Mod<fmod=1>(h, p_pos_c)", extra_params="float[8,1,1] p_pos_c"),
    RuleCase(
        "BitShift",
        """
        a = Abs(h)
        u = Cast<to=12>(a)
        s = Constant<value=uint32[1] {1}>()
        r = BitShift<direction="LEFT">(u, s)
        t = Cast<to=1>(r)
    """,
    ),
    RuleCase(
        "Where", "c = Greater(h, p_c)\n t = Where(c, h, p_c)", extra_params="float[8,1,1] p_c"
    ),
    *[_compare(op) for op in ("Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual")],
    RuleCase(
        "Conv", "t = Conv<group=2, pads=[1,1,1,1]>(h, p_wg)", extra_params="float[8,4,3,3] p_wg"
    ),
    RuleCase(
        "ConvTranspose",
        "t = ConvTranspose(h, p_wt, p_bt)",
        extra_params="float[8,6,1,1] p_wt, float[6] p_bt",
        consumer_channels=6,
    ),
    RuleCase(
        "BatchNormalization",
        "t = BatchNormalization(h, p_s, p_b, p_m, p_pos_v)",
        extra_params="float[8] p_s, float[8] p_b, float[8] p_m, float[8] p_pos_v",
    ),
    RuleCase(
        "InstanceNormalization",
        "t = InstanceNormalization(h, p_s, p_b)",
        extra_params="float[8] p_s, float[8] p_b",
    ),
    RuleCase(
        "GroupNormalization",
        "t = GroupNormalization<num_groups=4>(h, p_s, p_b)",
        extra_params="float[8] p_s, float[8] p_b",
    ),
    RuleCase(
        "LayerNormalization",
        "t = LayerNormalization<axis=1>(h, p_s, p_b)",
        extra_params="float[8,8,8] p_s, float[8,8,8] p_b",
        prunable=False,
    ),
    RuleCase("LpNormalization", "t = LpNormalization<axis=1>(h)", prunable=False),
    RuleCase("LRN", "t = LRN<size=3>(h)", prunable=False),
    RuleCase(
        "MeanVarianceNormalization",
        "t = MeanVarianceNormalization<axes=[1,2,3]>(h)",
        prunable=False,
    ),
    RuleCase("Concat", "t = Concat<axis=1>(h, x)", consumer_channels=12),
    RuleCase(
        "Split", "a, b = Split<axis=1, num_outputs=2>(h)\n t = Add(a, b)", consumer_channels=4
    ),
    RuleCase(
        "Slice",
        """
        st = Constant<value=int64[1] {2}>()
        en = Constant<value=int64[1] {7}>()
        ax = Constant<value=int64[1] {1}>()
        t = Slice(h, st, en, ax)
    """,
        consumer_channels=5,
    ),
    RuleCase(
        "Reshape",
        """
        s1 = Constant<value=int64[5] {0, 2, 4, 8, 8}>()
        a = Reshape(h, s1)
        b = Transpose<perm=[0,2,1,3,4]>(a)
        s2 = Constant<value=int64[4] {0, 8, 8, 8}>()
        t = Reshape(b, s2)
    """,
    ),
    RuleCase(
        "Transpose",
        "a = Transpose<perm=[0,2,3,1]>(h)\n b = Relu(a)\n t = Transpose<perm=[0,3,1,2]>(b)",
    ),
    RuleCase(
        "Flatten",
        "a = GlobalAveragePool(h)\n t = Flatten(a)",
        tail="y = Gemm<transB=1>(t, p_fc)",
        extra_params="float[5,8] p_fc",
        output="float[N,5] y",
    ),
    RuleCase(
        "Squeeze",
        """
        a = GlobalAveragePool(h)
        ax = Constant<value=int64[2] {2, 3}>()
        t = Squeeze(a, ax)
    """,
        tail="y = Gemm<transB=1>(t, p_fc)",
        extra_params="float[5,8] p_fc",
        output="float[N,5] y",
    ),
    RuleCase(
        "Unsqueeze",
        """
        ax = Constant<value=int64[1] {2}>()
        a = Unsqueeze(h, ax)
        b = Relu(a)
        t = Squeeze(b, ax)
    """,
    ),
    RuleCase(
        "Gemm",
        """
        a = GlobalAveragePool(h)
        f = Flatten(a)
        g1 = Gemm<transB=1>(f, p_g1, p_gb)
        t = Relu(g1)
    """,
        tail="y = Gemm<transB=1>(t, p_fc)",
        extra_params="float[16,8] p_g1, float[16] p_gb, float[5,16] p_fc",
        output="float[N,5] y",
    ),
    RuleCase(
        "MatMul",
        """
        a = Transpose<perm=[0,2,3,1]>(h)
        m = MatMul(a, p_mm)
        t = Transpose<perm=[0,3,1,2]>(m)
    """,
        extra_params="float[8,6] p_mm",
        consumer_channels=6,
    ),
    *[
        RuleCase(
            op,
            f"t = {op}<kernel_shape=[2,2], strides=[2,2]>(h)",
            spatial=8,
            output="float[N,5,4,4] y",
        )
        for op in ("MaxPool", "AveragePool", "LpPool")
    ],
    *[
        RuleCase(op, f"t = {op}(h)", output="float[N,5,1,1] y")
        for op in ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
    ],
    *[_reduce_spatial(op) for op in REDUCE_OPS if op not in _SPECIAL_REDUCE],
    RuleCase(
        "ReduceLogSum",
        """
        a = Abs(h)
        b = Add(a, p_one)
        axes = Constant<value_ints=[2,3]>()
        t = ReduceLogSum<keepdims=1>(b, axes)
    """,
        extra_params="float p_one",
        output="float[N,5,1,1] y",
    ),
    RuleCase(
        "ArgMax", "r = ArgMax<axis=3, keepdims=1>(h)\n t = Cast<to=1>(r)", output="float[N,5,8,1] y"
    ),
    RuleCase(
        "ArgMin", "r = ArgMin<axis=2, keepdims=1>(h)\n t = Cast<to=1>(r)", output="float[N,5,1,8] y"
    ),
    RuleCase("Softmax", "t = Softmax<axis=1>(h)", prunable=False),
    RuleCase("LogSoftmax", "a = LogSoftmax<axis=3>(h)\n t = Add(a, h)"),
    RuleCase("Hardmax", "a = Hardmax<axis=1>(h)\n t = Add(a, h)", prunable=False),
    RuleCase(
        "Pad",
        """
        pads = Constant<value=int64[8] {0, 0, 1, 1, 0, 0, 1, 1}>()
        t = Pad(h, pads)
    """,
        output="float[N,5,10,10] y",
    ),
    RuleCase(
        "Resize",
        """
        roi = Constant<value=float[0] {}>()
        sc = Constant<value=float[4] {1.0, 1.0, 2.0, 2.0}>()
        t = Resize<mode="nearest">(h, roi, sc)
    """,
        output="float[N,5,16,16] y",
    ),
    RuleCase(
        "Upsample",
        """
        sc = Constant<value=float[4] {1.0, 1.0, 2.0, 2.0}>()
        t = Upsample<mode="nearest">(h, sc)
    """,
        output="float[N,5,16,16] y",
        opset=9,
    ),
    RuleCase(
        "Gather",
        """
        idx = Constant<value=int64[4] {0, 2, 4, 6}>()
        t = Gather<axis=3>(h, idx)
    """,
        output="float[N,5,8,4] y",
    ),
    RuleCase(
        "Shape",
        """
        s = Shape(h)
        i0 = Constant<value=int64[1] {0}>()
        b = Gather(s, i0)
        rest = Constant<value=int64[3] {8, 8, 8}>()
        target = Concat<axis=0>(b, rest)
        t = Reshape(h, target)
    """,
    ),
    RuleCase(
        "Size",
        """
        n = Size(h)
        f = Cast<to=1>(n)
        t = Mul(h, f)
    """,
        prunable=False,
    ),
    RuleCase(
        "Einsum",
        """
        s = Einsum<equation="nchw,c->nchw">(h, p_s)
        t = Einsum<equation="nchw->nchw">(s)
    """,
        extra_params="float[8] p_s",
    ),
    RuleCase(
        "Expand",
        """
        target = Constant<value=int64[4] {1, 8, 1, 1}>()
        t = Expand(h, target)
    """,
    ),
    RuleCase(
        "GatherND",
        """
        rows = Transpose<perm=[2,3,0,1]>(h)
        idx = Constant<value=int64[8,1] {7, 6, 5, 4, 3, 2, 1, 0}>()
        flipped = GatherND(rows, idx)
        t = Transpose<perm=[2,3,0,1]>(flipped)
    """,
    ),
]
