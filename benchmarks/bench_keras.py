"""The Keras 3 / TensorFlow peer: aelab's base ``conv`` model as published Keras examples build it.

It runs in its own process (``python benchmarks/bench_keras.py --worker``) so that TensorFlow's and torch's
thread pools never share a process; ``KerasPeer`` starts that worker and sends it one JSON command per line:

- ``hello``: versions, thread settings, parameter count;
- ``throughput``: one ``model.fit`` epoch over the images in an .npy file (the model is kept between calls,
  so the first call is the warm-up that traces the step);
- ``quality``: the Keras base recipe (Adam, BCE, batch 256, up to N epochs) from a fresh model, with the test
  SSIM measured after each epoch (aelab's own SSIM, the clock stopped while it runs);
- ``quit``.

The data travel as uint8 .npy files written by the parent; the worker scales them to float32 in [0, 1]
once, outside every timing, as the published examples do.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def available() -> str | None:
    """None when TensorFlow and Keras 3 can be imported here, otherwise why not (one line)."""
    missing = [m for m in ("tensorflow", "keras") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"{' and '.join(missing)} not installed; the Keras/TensorFlow peer is skipped "
                f"(install it with: .venv/bin/pip install -e '.[bench]')")
    return None


# ------------------------------------------------------------------------------------------ the worker side
def build_model(latent: int = 64, model: str = "conv") -> Any:
    """aelab's ``conv`` (the base model, compiled with the Keras recipe: Adam 1e-3, BCE) or ``conv-modified``
    (the default model, compiled with aelab's default loss and optimizer), layer for layer.

    Under the ``mixed_bfloat16`` policy (``--precision bf16``) the layers compute in bf16 with fp32 weights, and
    the output layer stays float32 as the Keras mixed-precision guide recommends (aelab likewise computes its
    loss in fp32)."""
    if model == "conv-modified":
        return build_modified(latent)
    import keras
    from keras import layers

    # Conv2D 32 - MaxPool - Conv2D 64 - MaxPool - Conv2D 128 - Dense latent; Dense 7*7*128 - Reshape -
    # Conv2DTranspose 64 /2 - Conv2DTranspose 32 /2 - Conv2D 1 sigmoid.
    encoder = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, 3, activation="relu", padding="same"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu", padding="same"),
        layers.MaxPooling2D(2),
        layers.Conv2D(128, 3, activation="relu", padding="same"),
        layers.Flatten(),
        layers.Dense(latent),
    ], name="encoder")
    decoder = keras.Sequential([
        keras.Input((latent,)),
        layers.Dense(7 * 7 * 128, activation="relu"),
        layers.Reshape((7, 7, 128)),
        layers.Conv2DTranspose(64, 3, strides=2, activation="relu", padding="same"),
        layers.Conv2DTranspose(32, 3, strides=2, activation="relu", padding="same"),
        layers.Conv2D(1, 3, activation="sigmoid", padding="same", dtype="float32"),
    ], name="decoder")
    net = keras.Sequential([encoder, decoder], name="autoencoder")
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    return net


def build_modified(latent: int = 64) -> Any:
    """aelab's ``conv-modified`` (the default model): conv 32, conv 32 /2, conv 64, conv 64 /2, conv 128, each
    without bias + batch norm + ReLU; dropout 0.1; dense latent. Decoder: dense 7*7*128 + batch norm + ReLU,
    conv 64, transposed conv 64 (4x4) x2, conv 32, transposed conv 32 (4x4) x2, each + batch norm + ReLU, conv 1.
    Compiled with the default recipe's loss, MSE + 0.1 (1 - SSIM) (``tf.image.ssim``: 11x11 Gaussian window,
    sigma 1.5, the headline SSIM's window) and AdamW (lr 3e-3, weight decay 1e-4); batch norm as torch's
    (momentum 0.9 in Keras's convention = torch's 0.1, epsilon 1e-5)."""
    import keras
    import tensorflow as tf
    from keras import layers

    def block(filters: int, stride: int = 1, transpose: bool = False) -> list[Any]:
        conv = (layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False) if transpose
                else layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False))
        return [conv, layers.BatchNormalization(momentum=0.9, epsilon=1e-5), layers.ReLU()]

    encoder = keras.Sequential([
        keras.Input((28, 28, 1)),
        *block(32), *block(32, 2), *block(64), *block(64, 2), *block(128),
        layers.Flatten(), layers.Dropout(0.1), layers.Dense(latent),
    ], name="encoder")
    decoder = keras.Sequential([
        keras.Input((latent,)),
        layers.Dense(7 * 7 * 128, use_bias=False), layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
        layers.ReLU(), layers.Reshape((7, 7, 128)),
        *block(64), *block(64, transpose=True), *block(32), *block(32, transpose=True),
        layers.Conv2D(1, 3, padding="same", activation="sigmoid", dtype="float32"),
    ], name="decoder")

    def loss(y: Any, p: Any) -> Any:
        mse = tf.reduce_mean(tf.square(y - p), axis=[1, 2, 3])
        return mse + 0.1 * (1.0 - tf.image.ssim(y, p, max_val=1.0, filter_size=11, filter_sigma=1.5))

    net = keras.Sequential([encoder, decoder], name="autoencoder-modified")
    net.compile(optimizer=keras.optimizers.AdamW(3e-3, weight_decay=1e-4), loss=loss)
    return net


def _load(path: str) -> Any:
    import numpy as np

    return (np.load(path).astype("float32") / 255.0)[..., None]  # (n, 28, 28, 1) in [0, 1]


class _Worker:
    def __init__(self, threads: int | None, precision: str = "fp32"):
        import keras
        import tensorflow as tf

        if precision == "bf16":
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        self.precision = precision

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        import torch  # only for aelab's SSIM after each epoch; it never runs during a timed step

        if threads:
            torch.set_num_threads(threads)
        self.tf = tf
        self.models: dict[tuple[str, int], Any] = {}
        self.cache: dict[str, Any] = {}

    def data(self, path: str) -> Any:
        if path not in self.cache:
            self.cache[path] = _load(path)
        return self.cache[path]

    def hello(self, latent: int = 64, model: str = "conv") -> dict[str, Any]:
        import keras

        net = build_model(latent, model)
        return {"tensorflow": self.tf.__version__, "keras": keras.__version__, "backend": keras.backend.backend(),
                "precision": self.precision, "policy": keras.mixed_precision.global_policy().name,
                "intra_op_threads": self.tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op_threads": self.tf.config.threading.get_inter_op_parallelism_threads(),
                "model": model, "parameters": int(net.count_params()), "jit_compile": str(net.jit_compile)}

    def throughput(self, x: str, batch: int = 256, latent: int = 64, model: str = "conv") -> dict[str, Any]:
        import keras

        data = self.data(x)
        if (model, latent) not in self.models:  # kept between calls: the first call traces the step (warm-up)
            keras.utils.set_random_seed(0)
            self.models[model, latent] = build_model(latent, model)
        times: dict[str, float] = {}

        class Clock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                times["begin"] = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                times["end"] = time.perf_counter()
                times["loss"] = float((logs or {}).get("loss", float("nan")))

        self.models[model, latent].fit(data, data, batch_size=batch, epochs=1, shuffle=True, verbose=0,
                                       callbacks=[Clock()])
        seconds = times["end"] - times["begin"]
        return {"images": int(len(data)), "seconds": seconds, "images_per_s": len(data) / seconds,
                "loss": times["loss"]}

    def profile(self, x: str, logdir: str, batch: int = 256, latent: int = 64, model: str = "conv") -> dict[str, Any]:
        """One ``model.fit`` epoch over ``x`` under the TensorFlow profiler (trace written to ``logdir``), after a
        warm-up epoch (tracing, primitive creation) that is not traced."""
        self.throughput(x, batch, latent, model)
        self.tf.profiler.experimental.start(logdir)
        try:
            out = self.throughput(x, batch, latent, model)
        finally:
            self.tf.profiler.experimental.stop()
        return out

    def quality(self, train: str, test: str, budgets_s: list[float], epochs: int = 10, batch: int = 256,
                latent: int = 64, seed: int = 0, every: float = 0.0) -> dict[str, Any]:
        import keras
        import torch
        from bench_common import Judge, mean_ssim

        x_train, x_test = self.data(train), self.data(test)
        target = torch.from_numpy(x_test).permute(0, 3, 1, 2).contiguous()
        steps = -(-len(x_train) // batch)
        box: dict[str, Any] = {"stopped": "completed", "epoch": 0}

        def evaluate() -> float:
            pred = box["model"].predict(x_test, batch_size=1000, verbose=0)
            return mean_ssim(torch.from_numpy(pred).permute(0, 3, 1, 2), target)

        judge = Judge(evaluate, budgets_s, every)

        class Hooks(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                box["epoch"] = epoch

            def on_train_batch_end(self, batch_index: int, logs: Any = None) -> None:
                if judge.step(box["epoch"] + (batch_index + 1) / steps):
                    box["stopped"] = "time-cap"
                    self.model.stop_training = True

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                if box["stopped"] != "time-cap":
                    judge.epoch_end(epoch + 1, loss=round(float((logs or {}).get("loss", float("nan"))), 5))

        keras.utils.set_random_seed(seed)
        box["model"] = build_model(latent)
        box["model"].fit(x_train, x_train, batch_size=batch, epochs=epochs, shuffle=True, verbose=0,
                         callbacks=[Hooks()])
        return {"readings": judge.readings, "stopped": box["stopped"], "eval_seconds": round(judge.spent, 2)}


def worker_main(threads: int | None, precision: str = "fp32") -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything TensorFlow or Keras prints goes to stderr, never into the protocol
    sys.path.insert(0, str(HERE))
    try:
        worker = _Worker(threads, precision)
    except Exception as err:  # noqa: BLE001 - reported to the parent, which records it
        proto.write(json.dumps({"error": f"{type(err).__name__}: {err}"}) + "\n")
        return
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        if cmd == "quit":
            break
        try:
            reply = {"ok": getattr(worker, cmd)(**msg)}
        except Exception as err:  # noqa: BLE001 - one failed command must not kill the whole suite
            reply = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"}
        proto.write(json.dumps(reply) + "\n")


# ------------------------------------------------------------------------------------------ the parent side
class PeerError(RuntimeError):
    """The Keras worker failed; the message says how (with the tail of its log)."""


class KerasPeer:
    """A running Keras worker process; ``call(cmd, **args)`` returns its reply or raises ``PeerError``."""

    def __init__(self, threads: int | None, log_dir: str | Path, precision: str = "fp32"):
        self.precision = precision
        self.log_path = Path(log_dir) / f"keras-worker-{precision}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in close()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, str(HERE / "bench_keras.py"), "--worker"]
        if threads:
            cmd += ["--threads", str(threads)]
        cmd += ["--precision", precision]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env=env)
        self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise PeerError(f"the Keras worker exited ({self.proc.wait()}); {self._tail()}")
        reply = json.loads(line)
        if "error" in reply:
            raise PeerError(f"Keras worker: {reply['error']}")
        return reply.get("ok", reply)

    def _tail(self) -> str:
        self.log.flush()
        lines = [ln for ln in self.log_path.read_text().splitlines() if ln.strip()]
        return "last log line: " + (lines[-1][:200] if lines else "(empty)")

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise PeerError(f"the Keras worker is gone; {self._tail()}") from None
        return self._read()

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def temp_npy(folder: str | Path, name: str, images: Any) -> str:
    """Save uint8 images (a torch tensor or array) for the worker; returns the path."""
    import numpy as np

    path = Path(folder) / f"{name}.npy"
    np.save(path, np.asarray(images.numpy() if hasattr(images, "numpy") else images, dtype=np.uint8))
    return str(path)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="the Keras peer worker (started by benchmarks/run.py)")
    p.add_argument("--worker", action="store_true", required=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: Keras's mixed_bfloat16 policy (bf16 compute, fp32 weights)")
    a = p.parse_args()
    worker_main(a.threads, a.precision)

__all__ = ["KerasPeer", "PeerError", "available", "build_model", "temp_npy"]
