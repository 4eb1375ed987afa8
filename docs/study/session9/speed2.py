import sys, time, os, torch
sys.path.insert(0, "/tmp/exp")
from variants import make
torch.set_num_threads(2)
from aelab.config import RunConfig
from aelab.training.losses import make_loss
cases = [(p, b, w) for p in ("bf16", "fp32") for b in (128, 64, 32) for w in (1.0, 1.5)]
res = {}
built = {}
for p, b, w in cases:
    m = make(64, "base", width=w).to(memory_format=torch.channels_last)
    built[(p, b, w)] = (m, torch.optim.AdamW(m.parameters(), 1e-3), make_loss(RunConfig(), m),
                        torch.rand(b, 1, 28, 28).contiguous(memory_format=torch.channels_last))
for rnd in range(2):
    for key, (m, opt, lf, x) in built.items():
        ac = torch.autocast("cpu", dtype=torch.bfloat16, enabled=key[0] == "bf16")
        n = max(8, 2048 // key[1])
        for i in range(n + 3):
            if i == 3: t = time.perf_counter()
            opt.zero_grad()
            with ac: out = m(x)
            lf(out.float(), x, epoch=0.0).backward(); opt.step()
        res.setdefault(key, []).append(round(key[1] * n / (time.perf_counter() - t)))
print("load", os.getloadavg())
for k, v in res.items(): print(k, v)
