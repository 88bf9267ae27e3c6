"""Einsum: every subscript letter is one axis shared by all operands that carry it.

A letter kept in the output (batch, heads, rows) couples that axis of every operand and the output;
a contracted letter couples the operands' axes that are summed together. Both are identity maps,
the same classes a MatMul has, written for any equation (MaxViT's ``"bhid,bhjd->bhij"``).
"""

from __future__ import annotations

import onnx_ir as ir

from onnx_graph.analysis_context import AnalysisContext
from onnx_graph.rules.base import OpRule, register_rule
from onnx_graph.rules.helpers import AxisRef, couple_classes, rank


def parse_equation(equation: str, ranks: list[int | None]) -> tuple[list[str], str] | None:
    """Subscripts per input and of the output, with ``...`` expanded (None if ranks are unknown)."""
    equation = equation.replace(" ", "")
    if "->" in equation:
        inputs_part, output = equation.split("->")
    else:
        inputs_part, output = equation, None
    terms = inputs_part.split(",")
    if len(terms) != len(ranks) or any(r is None for r in ranks):
        return None
    ellipsis_rank = max(
        (
            r - len(t.replace("...", ""))
            for t, r in zip(terms, ranks, strict=True)
            if "..." in t and r is not None
        ),
        default=0,
    )
    broadcast = "".join(chr(ord("A") + i) for i in range(ellipsis_rank))
    expanded = []
    for term, term_rank in zip(terms, ranks, strict=True):
        if "..." in term:
            assert term_rank is not None
            own = term_rank - len(term.replace("...", ""))
            term = term.replace("...", broadcast[ellipsis_rank - own :])
        expanded.append(term)
    if output is None:  # implicit mode: letters used once, sorted
        letters = "".join(expanded)
        output = broadcast + "".join(
            sorted(c for c in set(letters) if letters.count(c) == 1 and c not in broadcast)
        )
    else:
        output = output.replace("...", broadcast)
    return expanded, output


@register_rule("Einsum")
class EinsumRule(OpRule):
    def propagate(self, node: ir.Node, port: ir.Value, axis: int, ctx: AnalysisContext) -> None:
        attribute = node.attributes.get("equation")
        inputs, output = list(node.inputs), node.outputs[0]
        parsed = (
            parse_equation(str(attribute.value), [rank(v) for v in inputs]) if attribute else None
        )
        if parsed is None:
            ctx.freeze_node(node, port, axis, "cannot parse the einsum equation")
            return
        terms, output_term = parsed
        if any(len(set(term)) != len(term) for term in (*terms, output_term)):
            ctx.freeze_node(node, port, axis, "einsum with a repeated subscript (diagonal)")
            return
        letters = sorted(set("".join(terms)) | set(output_term))
        classes: list[list[AxisRef]] = []
        for letter in letters:
            members: list[AxisRef] = [
                (value, term.index(letter))
                for value, term in zip(inputs, terms, strict=True)
                if letter in term
            ]
            if letter in output_term:
                members.append((output, output_term.index(letter)))
            classes.append(members)
        couple_classes(node, port, axis, ctx, classes)
