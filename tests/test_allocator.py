"""aelab.allocator: glibc's malloc keeps freed tensor memory, so a training step no longer faults its tensors in
again page by page (the 1.2x of benchmarks/README.md "Levers"). Counted in page faults, not timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CHILD = r"""
import json, resource, sys
import torch
from aelab.allocator import keep_freed_memory
from aelab.models import build_model
applied = keep_freed_memory()
torch.manual_seed(0)
torch.set_num_threads(1)
model = build_model("conv", 16).to(memory_format=torch.channels_last)
opt = torch.optim.Adam(model.parameters())
x = torch.rand(128, 1, 28, 28).contiguous(memory_format=torch.channels_last)
faults = []
for step in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": min(faults[2:])}))
"""


def _child(**env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setting is glibc's")
def test_a_training_step_stops_faulting_its_tensors_in_again() -> None:
    kept = _child(AELAB_MALLOC="")
    system = _child(AELAB_MALLOC="system")  # the opt-out leaves malloc as it is
    assert kept["applied"] is True and system["applied"] is False
    # glibc as it comes hands each step's large tensors back and faults them in again (thousands of pages per
    # step); kept, a step after the first ones reuses them
    assert system["faults"] > 1000, system
    assert kept["faults"] < system["faults"] / 10, (kept, system)
