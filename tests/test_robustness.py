"""Bad input never gives a traceback, and a failed write never loses the previous file.

Property-based (hypothesis): IDX headers, config files and input arrays drawn at random either work or raise
aelab's own one-line error. Then the base layer's guarantees: a full disk (a file-size limit on the process)
during a checkpoint write leaves the previous checkpoint intact, and the run-folder lock names its holder.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aelab.checkpoints import load_checkpoint, save_checkpoint
from aelab.config import RunConfig, resolve
from aelab.data.idx import parse_idx
from aelab.data.pixels import to_pixels
from aelab.errors import AelabError, ConfigError, DataError, InputError, RunError
from aelab.files import folder_lock
from aelab.runs import Run

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _one_line(err: Exception) -> None:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text


# ------------------------------------------------------------------------------------------ IDX headers
@FUZZ
@given(magic=st.integers(0, 2**32 - 1), dims=st.lists(st.integers(0, 70), min_size=0, max_size=4),
       extra=st.integers(-3, 3))
def test_random_idx_headers_parse_or_give_one_line(magic: int, dims: list[int], extra: int) -> None:
    body = max(0, int(np.prod(dims)) + extra) if dims else max(0, extra)
    raw = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + b"\0" * body
    try:
        arr = parse_idx(raw)
    except DataError as err:
        _one_line(err)
    else:
        assert arr.dtype == np.uint8 and arr.ndim in (1, 3)


@FUZZ
@given(raw=st.binary(max_size=64))
def test_random_bytes_as_idx_give_one_line(raw: bytes) -> None:
    try:
        parse_idx(raw)
    except DataError as err:
        _one_line(err)


# ------------------------------------------------------------------------------------------ config files
KEYS = [f.replace("_", "-") for f in RunConfig.__dataclass_fields__] + ["latent", "lr", "nonsense", "1"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=12))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=4), SCALARS, max_size=2))


@FUZZ
@given(doc=st.one_of(st.dictionaries(st.one_of(st.sampled_from(KEYS), st.integers(), st.booleans()), VALUES,
                                     max_size=5),
                     st.lists(SCALARS, max_size=3), SCALARS))
def test_random_config_files_resolve_or_give_one_line(doc: object, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        cfg = resolve(config_file=path)
    except ConfigError as err:
        _one_line(err)
    else:
        assert isinstance(cfg.latent, int) and not isinstance(cfg.latent, bool) and 1 <= cfg.latent <= 1024
        assert np.isfinite(cfg.width) and np.isfinite(cfg.lr)


def test_the_config_cases_seen_as_tracebacks_or_silent_wrongs(tmp_path: Path) -> None:
    cases = {"1: 2\n": "option name 1", "latent: true\n": "latent", "width: .inf\n": "width", "- 1\n": "mapping",
             "lr: .nan\n": "lr"}
    for text, word in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=word) as err:
            resolve(config_file=path)
        _one_line(err.value)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("- a list\n- not a mapping\n")
    with pytest.raises(RunError, match="mapping") as err:
        Run(run).config()
    _one_line(err.value)


# ------------------------------------------------------------------------------------------ input arrays
DTYPES = st.sampled_from([np.uint8, np.int16, np.int64, np.float16, np.float32, np.float64, np.bool_, np.complex64])
SHAPES = st.sampled_from([(3, 28, 28), (2, 1, 28, 28), (4, 784), (28, 28), (784,), (2, 27, 28), (2, 3, 28, 28),
                          (0, 28, 28), (1, 2, 3, 4, 5)])


@FUZZ
@given(dtype=DTYPES, shape=SHAPES, data=st.data())
def test_random_input_arrays_become_pixels_or_give_one_line(dtype: type, shape: tuple[int, ...],
                                                            data: st.DataObject) -> None:
    fill = data.draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=16),
                               st.integers(-300, 300), st.booleans()))
    with np.errstate(invalid="ignore", over="ignore"):  # NaN or 300 cast to an integer type: that is the point
        arr = np.full(shape, fill).astype(dtype)
    try:
        x = to_pixels(arr)
    except InputError as err:
        _one_line(err)
    else:
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
        assert bool(((x >= 0) & (x <= 1)).all())


# ------------------------------------------------------------------------------------------ failed writes
FULL_DISK = r"""
import resource, signal, sys, torch
from aelab.errors import AelabError
from aelab.checkpoints import save_checkpoint
path = sys.argv[1]
save_checkpoint(path, {"w": torch.zeros(1000)}, {"epoch": 1})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)             # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))   # smaller than the next checkpoint
try:
    save_checkpoint(path, {"w": torch.ones(100000)}, {"epoch": 2})
except AelabError as err:
    print(err)
    sys.exit(err.exit_code)
"""


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.safetensors"
    r = subprocess.run([sys.executable, "-c", FULL_DISK, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "cannot write" in r.stdout and "unchanged" in r.stdout and r.stdout.count("\n") == 1
    tensors, meta = load_checkpoint(path)
    assert meta == {"epoch": 1} and torch.equal(tensors["w"], torch.zeros(1000))
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"], "a temporary file was left behind"


def test_flipped_bytes_or_nan_weights_are_refused_with_one_line(tmp_path: Path) -> None:
    """Seen: a checkpoint with flipped bytes loaded as NaN weights and wrote garbage PNGs with exit 0."""
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"model.w": torch.linspace(0, 1, 4096)}, {"epoch": 1})
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # one byte of the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(RunError, match="checksum") as err:
        load_checkpoint(path)
    _one_line(err.value)
    from aelab.checkpoints import check_finite  # lazy: only this test needs it

    with pytest.raises(RunError, match="non-finite") as err:
        check_finite({"w": torch.tensor([1.0, float("nan")])}, path)
    _one_line(err.value)


def test_the_folder_lock_is_exclusive_across_processes_and_names_its_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom aelab.files import folder_lock\n"
                               "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=f"pid {holder.pid}") as err:
            with folder_lock(tmp_path):
                pass
        _one_line(err.value)
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path), folder_lock(tmp_path):  # free again at once, and re-entrant in one process
        pass


def test_every_error_is_an_aelab_error_with_a_usage_exit_code() -> None:
    for kind in (DataError, InputError, ConfigError, RunError):
        assert issubclass(kind, AelabError) and kind.exit_code == 2
