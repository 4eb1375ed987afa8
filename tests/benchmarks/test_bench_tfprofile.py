"""benchmarks/bench_tfprofile.py reads XProf's framework_op_stats table (a Google DataTable, as XProf 2.24 writes
it): self time per step by op type, the threads' idle time set apart. Pure reading; no TensorFlow here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

COLS = ["rank", "host_or_device", "type", "operation", "occurrences", "total_time", "avg_time", "total_self_time"]


@pytest.fixture(scope="module")
def tfprofile():
    saved = list(sys.path)
    spec = importlib.util.spec_from_file_location("bench_tfprofile", Path(__file__).resolve().parents[2] /
                                                  "benchmarks" / "bench_tfprofile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.path[:] = saved
    return module


def _table(rows: list[tuple[str, int, float]]) -> str:
    return json.dumps([{"cols": [{"id": c} for c in COLS], "rows": [
        {"c": [{"v": i}, {"v": "Host"}, {"v": t}, {"v": f"{t}/{i}"}, {"v": n}, {"v": us}, {"v": us / n}, {"v": us}]}
        for i, (t, n, us) in enumerate(rows)]}])


def test_self_times_per_step_by_op_type_with_idle_apart(tfprofile) -> None:
    stats = _table([("IDLE", 0 or 1, 900_000.0), ("_MklNativeConv2DBackpropFilter", 40, 300_000.0),
                    ("Mul", 300, 60_000.0), ("_MklNativeConv2DBackpropFilter", 20, 100_000.0), ("Mul", 10, 40_000.0)])
    got = tfprofile.op_table(stats, steps=10, top=5)
    assert got["idle_ms_per_step"] == 90.0 and got["busy_ms_per_step"] == 50.0
    first, second = got["ops"]
    assert (first["type"], first["self_ms_per_step"], first["per_step"], first["share"]) == \
        ("_MklNativeConv2DBackpropFilter", 40.0, 6.0, 0.8)
    assert (second["type"], second["self_ms_per_step"], second["per_step"]) == ("Mul", 10.0, 31.0)
    assert len(tfprofile.op_table(stats, steps=10, top=1)["ops"]) == 1


def test_a_python_without_xprof_is_one_line_with_the_fix(tfprofile, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        tfprofile.parse_args(["--xprof-python", sys.executable])  # the test venv has no xprof
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "pip install xprof" in err and len(err.splitlines()) == 1
