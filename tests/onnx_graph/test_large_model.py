"""A synthetic ONNX model over 2 GB is analysed and pruned in under 2 GB of resident memory (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "large_model.py"


@pytest.mark.slow
def test_large_model_prunes_within_two_gigabytes(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(BENCH), "--folder", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1200,
    )
    result = json.loads(completed.stdout[completed.stdout.index("{") :])
    assert result["model_gb"] > 2.0
    assert result["peak_rss_gb"] < 2.0
    assert result["external_data"] and 0.5 < result["pruned_gb"] < 1.0  # hidden layers at 1/4
    assert result["relative_error"] < 1e-5
