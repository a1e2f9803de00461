"""On a real board: `pytest -m hardware --port /dev/ttyACM0 tests/test_bench_hardware.py`.

The board must run the gendertool firmware for the default model (`gendertool build`,
`gendertool flash`). Skipped without --port.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.hardware


def test_bench_on_board(cli, board_ports, tmp_path):
    args = [a for p in board_ports for a in ("--port", p)]
    r = cli("bench", *args, "-n", "100", "--warmup", "5", "--profile", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    paths = [tmp_path / "bench.json"] if len(board_ports) == 1 else list(tmp_path.glob("*/bench.json"))
    assert len(paths) == len(board_ports)
    for path in paths:
        data = json.loads(path.read_text())
        assert data["simulated"] is False and data["complete"] and data["completed"] == 100
        assert data["chip"] == "esp32s3" and data["versions"]["idf"] and data["versions"]["esp_nn"]
        assert data["memory"]["arena_used"] > 0 and data["profile"] and not data["profile_estimated"]
        assert all(s["pre_us"] > 0 and s["invoke_us"] > 0 for s in data["samples"])


def test_validate_on_board(cli, board_ports, portraits):
    args = [a for p in board_ports for a in ("--port", p)]
    r = cli("validate", *args, "--images", portraits, "--limit", "40", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    for board in doc["boards"]:
        assert board["simulated"] is False and board["selftest"]["pass"] is True
        assert board["parity_pct"] == 100.0
