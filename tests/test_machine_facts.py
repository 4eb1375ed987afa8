"""The machine's facts have one reader each (``aelab.device``): the CPU's model name and the load average, read by
the precision probe, the study's machine record, the tracked facts and the benchmarks alike."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import pytest
import torch

from aelab import device
from aelab.experiments import study
from aelab.tracking import facts

REPO = Path(__file__).resolve().parents[1]


def test_cpu_model_is_the_first_model_name_of_cpuinfo() -> None:
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        pytest.skip("no /proc/cpuinfo here")
    names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
             if line.lower().startswith("model name")]
    assert device.cpu_model() == (names[0] if names else device.cpu_model())
    assert device.cpu_model()


def test_cpu_model_without_cpuinfo_says_what_platform_knows(monkeypatch: pytest.MonkeyPatch) -> None:
    real = builtins.open

    def no_cpuinfo(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(file) == "/proc/cpuinfo":
            raise PermissionError(file)
        return real(file, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    monkeypatch.setattr(device.platform, "processor", lambda: "")
    monkeypatch.setattr(device.platform, "machine", lambda: "")
    assert device.cpu_model() == "unknown CPU"


def test_every_consumer_reports_the_same_machine() -> None:
    assert study.machine()["cpu"] == device.cpu_model()
    assert facts.machine(torch.device("cpu"))["cpu"] == device.cpu_model()
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_common  # noqa: PLC0415 - the benchmarks are scripts beside the package, not a package
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    info = bench_common.machine_info()
    assert info["cpu_model"] == device.cpu_model() and info["usable_cpus"] == device.cores()
    load = device.load_average()
    assert load is None or (len(load) == 3 and all(v >= 0 for v in load))


def test_nothing_else_reads_cpuinfo() -> None:
    readers = [p for folder in ("src", "benchmarks") for p in (REPO / folder).rglob("*.py")
               if "/proc/cpuinfo" in p.read_text() and p != REPO / "src" / "aelab" / "device.py"]
    assert not readers, f"read the CPU's model with aelab.device.cpu_model(), not again in {readers}"
