"""``spa.cli_prune``: MAC targets, every data-free criterion, the JSON report and clear errors."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from onnx_graph import count_cost, load, save
from onnx_graph.errors import SparsearchError
from spa import cli_prune
from tests.spa.conftest import TinyCase


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli_prune.add_arguments(parser)
    return cli_prune.run(parser.parse_args(argv))


def test_prune_to_a_mac_target_with_obspa_and_accuracy(
    tiny_case: TinyCase, tmp_path, capsys
) -> None:
    source, output, data = tmp_path / "m.onnx", tmp_path / "p.onnx", tmp_path / "d.npz"
    save(tiny_case.model, source)
    np.savez(data, x=tiny_case.x, y=tiny_case.y)
    argv = [
        str(source),
        "-o",
        str(output),
        "--criterion",
        "obspa",
        "--target-macs",
        "0.5",
        "--round-to",
        "2",
        "--calibration-data",
        str(data),
        "--json",
    ]
    assert _run(argv) == 0
    report = json.loads(capsys.readouterr().out)
    totals = report["totals"]
    assert report["criterion"] == "obspa" and totals["macs_kept"] <= 0.5
    assert count_cost(load(output)).macs == totals["macs_after"]
    assert 0.0 <= totals["accuracy_after"] <= 100.0 and "accuracy_before" in totals
    assert all(row["kept"] % 2 == 0 or row["kept"] == row["channels"] for row in report["groups"])
    assert all(row["score_kept"] is not None for row in report["groups"])


def test_text_report_and_default_ratio(tiny_case: TinyCase, tmp_path, capsys) -> None:
    source, output = tmp_path / "m.onnx", tmp_path / "p.onnx"
    save(tiny_case.model, source)
    assert _run([str(source), "-o", str(output), "--criterion", "l2", "--exclude", "*fc1*"]) == 0
    text = capsys.readouterr().out
    assert "criterion l2 (uniform allocation)" in text and "MACs" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--criterion", "taylor"], "needs the PyTorch module"),
        (["--target-macs", "0.0001"], "cannot reach"),
        (["--calibration-data", "missing.npz"], "no such calibration data"),
    ],
)
def test_bad_requests_are_one_line_errors(tiny_case: TinyCase, tmp_path, extra, message) -> None:
    source = tmp_path / "m.onnx"
    save(tiny_case.model, source)
    with pytest.raises(SparsearchError, match=message):
        _run([str(source), "-o", str(tmp_path / "p.onnx"), *extra])


def test_target_macs_and_ratio_are_exclusive(tmp_path) -> None:
    with pytest.raises(SystemExit):
        _run(["m.onnx", "-o", "p.onnx", "--ratio", "0.5", "--target-macs", "0.5"])
