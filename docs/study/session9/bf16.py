import sys, time, torch
sys.path.insert(0, "/tmp/exp")
from variants import make
torch.set_num_threads(2)
from aelab.config import RunConfig
from aelab.training.losses import make_loss
x = torch.rand(128, 1, 28, 28).contiguous(memory_format=torch.channels_last)
m = make(64, "base").to(memory_format=torch.channels_last)
opt = torch.optim.AdamW(m.parameters(), 1e-3); lf = make_loss(RunConfig(), m)
for rnd in range(3):
    for prec in ("fp32", "bf16"):
        ac = torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16")
        for i in range(18):
            if i == 3: t = time.perf_counter()
            opt.zero_grad()
            with ac: out = m(x)
            lf(out.float(), x, epoch=0.0).backward(); opt.step()
        print(prec, round(128 * 15 / (time.perf_counter() - t)))
