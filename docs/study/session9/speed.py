import sys, time, torch
sys.path.insert(0, "/tmp/exp")
from variants import make
from torch.utils.flop_counter import FlopCounterMode
threads = int(sys.argv[1]); torch.set_num_threads(threads)
from aelab.config import RunConfig
from aelab.training.losses import make_loss
specs = [a.split(":") for a in sys.argv[2:]]
res = {}
x = torch.rand(128, 1, 28, 28).contiguous(memory_format=torch.channels_last)
models = {}
for s in specs:
    v = s[0]; kw = dict(kv.split("=") for kv in s[1:]) if len(s) > 1 else {}
    kw = {k: float(val) for k, val in kw.items()}
    m = make(64, v, **kw).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    lf = make_loss(RunConfig(), m)
    with FlopCounterMode(display=False) as fc:
        lf(m(x), x, epoch=0.0).backward()
    models[":".join(s)] = (m, opt, lf, fc.get_total_flops() / 128, sum(p.numel() for p in m.parameters()))
for rnd in range(3):   # alternate contenders
    for name, (m, opt, lf, fl, npar) in models.items():
        for _ in range(3):
            opt.zero_grad(); lf(m(x), x, epoch=0.0).backward(); opt.step()
        t = time.perf_counter(); n = 15
        for _ in range(n):
            opt.zero_grad(); lf(m(x), x, epoch=0.0).backward(); opt.step()
        dt = (time.perf_counter() - t) / n
        res.setdefault(name, []).append(128 / dt)
import os
print("load", os.getloadavg()[0])
for name, (m, opt, lf, fl, npar) in models.items():
    print(f"{name:30s} params {npar/1e6:.2f}M  train MFLOP/img {fl/1e6:.0f}  img/s {[round(r) for r in res[name]]}")
