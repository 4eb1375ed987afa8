"""python train_variant.py VARIANT[:k=v...] -- aelab train args: the conv-modified slot replaced by a candidate."""
import sys
sys.path.insert(0, "/tmp/exp")
from variants import make
from aelab.models import registry
spec = sys.argv[1].split(":")
kw = {k: float(v) for k, v in (a.split("=") for a in spec[1:])}
def patched(latent, width=1.0, activation="relu", dropout=0.1, batch_norm=True, shape=None):
    m = make(latent, spec[0], width=width, dropout=dropout, activation=activation, **kw)
    m.hparams.update(width=width, dropout=dropout, activation=activation, batch_norm=batch_norm)
    return m
registry.MODELS["conv-modified"] = patched
sys.argv = ["aelab"] + sys.argv[2:]
from aelab.cli import main
main()
