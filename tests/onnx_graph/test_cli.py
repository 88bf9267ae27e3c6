"""The sparsearch command line: reports, JSON, bad input and an untouched input file."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import onnx
import onnx_ir as ir
import pytest

from onnx_graph import count_cost, load
from onnx_graph.cli import main
from tests.onnx_graph.tiny_graphs import RuleCase, build_model, graph_text


@pytest.fixture()
def model_path(tmp_path: Path) -> Path:
    case = RuleCase(
        "Gemm",
        """
        r = Relu(h)
        c = Conv<pads=[1,1,1,1]>(r, p_w3, p_b3)
        a = GlobalAveragePool(c)
        f = Flatten(a)
        g1 = Gemm<transB=1>(f, p_g1, p_gb)
        t = Relu(g1)
    """,
        tail="y = Gemm<transB=1>(t, p_fc)",
        extra_params="float[16,8,3,3] p_w3, float[16] p_b3, float[32,16] p_g1, float[32] p_gb, float[5,32] p_fc",
        output="float[N,5] y",
    )
    path = tmp_path / "small.onnx"
    ir.save(build_model(graph_text(case)), path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_prune_reports_costs_and_leaves_input_untouched(
    model_path: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    digest = _digest(model_path)
    out = tmp_path / "pruned.onnx"
    assert (
        main(["prune", str(model_path), "-o", str(out), "--ratio", "0.5", "--round-to", "4"]) == 0
    )
    text = capsys.readouterr().out
    assert "params:" in text and "MACs:" in text and "touches graph output" in text
    assert _digest(model_path) == digest
    onnx.checker.check_model(str(out), full_check=True)
    before, after = count_cost(load(model_path)), count_cost(load(out))
    assert after.params < before.params and after.macs < before.macs


def test_prune_json_lists_kept_channels(model_path: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert (
        main(["prune", str(model_path), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5", "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    kept = {g["channels"]: g["kept"] for g in report["groups"] if g["prunable"]}
    assert kept == {8: 4, 16: 8, 32: 16}
    assert report["after"]["macs"] < report["before"]["macs"]


def test_exclude_leaves_matching_groups_alone(model_path: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p.onnx"
    assert (
        main(
            [
                "prune",
                str(model_path),
                "-o",
                str(out),
                "--ratio",
                "0.5",
                "--exclude",
                "p_g1",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    gemm_group = next(g for g in report["groups"] if "p_g1[0]" in g["parameters"])
    assert gemm_group["kept"] == gemm_group["channels"] == 32


def test_inspect_json(model_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["inspect", str(model_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_prunable"] == 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["prune", "MISSING.onnx", "-o", "x.onnx"], "no such file"),
        (["prune", "NOTONNX", "-o", "x.onnx"], "not a readable ONNX model"),
        (["prune", "MODEL", "-o", "x.onnx", "--ratio", "1.0"], "ratio must be in [0, 1)"),
        (["prune", "MODEL", "-o", "x.onnx", "--ratio", "-0.1"], "ratio must be in [0, 1)"),
        (["prune", "MODEL", "-o", "MODEL"], "refusing to overwrite"),
    ],
)
def test_bad_input_gives_one_line_error(
    arguments: list[str], message: str, model_path: Path, tmp_path: Path
) -> None:
    not_onnx = tmp_path / "bad.onnx"
    not_onnx.write_text("hello, not a model")
    replace = {
        "MISSING.onnx": str(tmp_path / "missing.onnx"),
        "NOTONNX": str(not_onnx),
        "MODEL": str(model_path),
        "x.onnx": str(tmp_path / "x.onnx"),
    }
    digest = _digest(model_path)
    command = [sys.executable, "-m", "onnx_graph.cli", *[replace.get(a, a) for a in arguments]]
    result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert _digest(model_path) == digest
