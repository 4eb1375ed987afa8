"""Every path aelab writes (issue 29): links are written through and stay links, devices and FIFOs are written in
place, ``--force`` replaces only what aelab wrote, an output is never an input, and every refusal is one line.

The regression tests run the real commands on a small real run; the property tests throw every kind of target
(regular file, links, dangling links, loops, FIFOs, a device, folders, paths under a file) at the writers.
Root ignores permission bits, so a read-only folder is made with a read-only bind mount (skipped where mounting
is not allowed) and the lock's failure is also provoked by a lock path that is a folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from aelab.cli import main
from aelab.data import load_raw
from aelab.errors import AelabError, OutputError
from aelab.files import (
    LOCK_NAME,
    OUTPUT_LIST,
    StagedDir,
    atomic_write_bytes,
    atomic_write_with,
    folder_lock,
    move_into_place,
    temp_beside,
)
from aelab.use.codes import CodeWriter

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def cli(*args: str | Path) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result: object, *words: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def digest(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def pngs(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """Six 28x28 test images as PNG files: a user's own input folder."""
    (_, _, x, _), _ = load_raw("fashion-mnist")
    folder = tmp_path_factory.mktemp("input") / "pngs"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(x[i]).save(folder / f"img{i}.png")
    return folder


def null_device(folder: Path, name: str = "null") -> Path:
    """A character device like /dev/null: a private node made with mknod (root), else /dev/null itself (which a
    non-root writer cannot replace anyway, so a broken writer fails instead of harming the machine)."""
    node = folder / name
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError):
        return Path("/dev/null")
    return node


@contextlib.contextmanager
def fifo_reader(path: Path) -> Iterator[list[bytes]]:
    """A named pipe at ``path`` with a reader already attached (non-blocking, so a writer's open never waits and
    a broken writer that replaces the pipe leaves nothing to read); the bytes read come back in the list."""
    os.mkfifo(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    got: list[bytes] = []
    try:
        yield got
    finally:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(fd, 1 << 16):
                got.append(chunk)
        os.close(fd)


def temp_leftovers(*folders: Path) -> list[str]:
    return [str(p) for f in folders if f.is_dir() for p in f.rglob("*")
            if p.name.startswith(".") and p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------ case 2: links, devices
def test_encode_through_a_symlink_keeps_the_link(run_path: Path, tmp_path: Path) -> None:
    (tmp_path / "real.npy").write_bytes(b"old")
    (tmp_path / "codes.npy").symlink_to("real.npy")
    r = cli("encode", run_path, "fashion-mnist:test", "-o", tmp_path / "codes.npy", "--limit", 5, "-q")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "codes.npy").is_symlink() and os.readlink(tmp_path / "codes.npy") == "real.npy"
    assert np.load(tmp_path / "real.npy").shape == (5, 16)
    assert temp_leftovers(tmp_path) == []


def test_score_into_a_fifo_writes_the_pipe_and_keeps_it_a_pipe(run_path: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "scores.csv"
    with fifo_reader(fifo) as got:
        r = cli("score", run_path, "fashion-mnist:test", "-o", fifo, "--limit", 4, "-q")
    assert r.exit_code == 0, r.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the named pipe was replaced by a regular file"
    lines = b"".join(got).decode().splitlines()
    assert lines[0].startswith("index,") and len(lines) == 5


def test_sample_through_a_link_to_a_device_keeps_both(vae_run_path: Path, tmp_path: Path) -> None:
    dev = null_device(tmp_path)
    (tmp_path / "grid.png").symlink_to(dev)  # sample wants a .png name: a link to the device
    r = cli("sample", vae_run_path, "-n", 4, "-o", tmp_path / "grid.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "grid.png").is_symlink() and stat.S_ISCHR(os.lstat(dev).st_mode), "the device was replaced"


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_a_dangling_link_or_a_loop_as_output_is_one_line(run_path: Path, tmp_path: Path, kind: str) -> None:
    out = tmp_path / "codes.npy"
    if kind == "dangling":
        out.symlink_to(tmp_path / "nowhere.npy")
    else:
        out.symlink_to(tmp_path / "other.npy")
        (tmp_path / "other.npy").symlink_to(out)
    one_line_error(cli("encode", run_path, "fashion-mnist:test", "-o", out, "--limit", 3, "-q"), str(out))
    assert out.is_symlink() and not (tmp_path / "nowhere.npy").exists()
    one_line_error(cli("reconstruct", run_path, "fashion-mnist:test", "-o", out, "--limit", 3, "-q"), str(out))


# ------------------------------------------------------------------------------------------ case 3: --force, inputs
@pytest.mark.parametrize("command", ["reconstruct", "denoise"])
def test_the_input_folder_is_never_the_output(run_path: Path, pngs: Path, command: str) -> None:
    before = digest(pngs)
    one_line_error(cli(command, run_path, pngs, "-o", pngs, "--force", "-q"), "input")
    one_line_error(cli(command, run_path, pngs, "-o", pngs / "sub", "--force", "-q"), "inside the input")
    link = pngs.parent / f"{command}-link"
    link.symlink_to(pngs)
    one_line_error(cli(command, run_path, link, "-o", pngs, "--force", "-q"), "input")
    assert digest(pngs) == before


def test_encode_never_writes_over_its_input_file(run_path: Path, tmp_path: Path) -> None:
    (_, _, x, _), _ = load_raw("fashion-mnist")
    np.save(tmp_path / "x.npy", x[:8])
    before = (tmp_path / "x.npy").read_bytes()
    one_line_error(cli("encode", run_path, tmp_path / "x.npy", "-o", tmp_path / "x.npy", "-q"), "input")
    (tmp_path / "link.npy").symlink_to("x.npy")
    one_line_error(cli("score", run_path, tmp_path / "link.npy", "-o", tmp_path / "x.npy", "-q"), "input")
    assert (tmp_path / "x.npy").read_bytes() == before


def test_decode_output_folder_may_not_hold_its_codes(run_path: Path, tmp_path: Path) -> None:
    assert cli("encode", run_path, "fashion-mnist:test", "-o", tmp_path / "c.npy", "--limit", 3, "-q").exit_code == 0
    one_line_error(cli("decode", run_path, tmp_path / "c.npy", "-o", tmp_path, "--force", "-q"), "holds the input")
    assert np.load(tmp_path / "c.npy").shape == (3, 16)


@pytest.mark.parametrize("command", ["reconstruct", "denoise"])
def test_force_replaces_only_what_aelab_wrote(run_path: Path, tmp_path: Path, command: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    one_line_error(cli(command, run_path, "fashion-mnist:test", "-o", out, "--limit", 3, "--force", "-q"),
                   "notes.txt", "not among the files aelab wrote")
    assert sorted(os.listdir(out)) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    # aelab's own earlier output is replaced whole, and listed
    fresh = tmp_path / "fresh"
    assert cli(command, run_path, "fashion-mnist:test", "-o", fresh, "--limit", 5, "-q").exit_code == 0
    one_line_error(cli(command, run_path, "fashion-mnist:test", "-o", fresh, "--limit", 2, "-q"), "--force")
    assert cli(command, run_path, "fashion-mnist:test", "-o", fresh, "--limit", 2, "--force", "-q").exit_code == 0
    names = sorted(p for p in os.listdir(fresh) if p != OUTPUT_LIST)
    assert len(names) == 3 and "index.csv" in names  # 2 images + index.csv; the 3 older images are gone
    assert json.loads((fresh / OUTPUT_LIST).read_text())["files"] == names
    # a file the user adds later is never touched, so --force refuses again
    (fresh / "later.txt").write_text("mine too")
    one_line_error(cli(command, run_path, "fashion-mnist:test", "-o", fresh, "--limit", 2, "--force", "-q"),
                   "later.txt")
    assert (fresh / "later.txt").read_text() == "mine too"


# ------------------------------------------------------------------------------------------ case 9: '.', read-only
@pytest.mark.parametrize("command", ["reconstruct", "denoise", "decode"])
def test_output_dot_writes_into_the_current_folder(run_path: Path, tmp_path: Path, command: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    codes = tmp_path / "c.npy"
    assert cli("encode", run_path, "fashion-mnist:test", "-o", codes, "--limit", 3, "-q").exit_code == 0
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    source = codes if command == "decode" else "fashion-mnist:test"
    r = cli(command, run_path, source, "-o", ".", "--limit", 3, "-q")
    assert r.exit_code == 0, r.output
    assert len(list(here.glob("*.png"))) == 3 and Path.cwd() == here and here.is_dir()
    one_line_error(cli(command, run_path, source, "-o", ".", "--limit", 3, "-q"), "--force")  # not empty now


def test_the_lock_of_a_folder_that_cannot_hold_it_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).mkdir()  # the lock file cannot be opened (as root too)
    with pytest.raises(OutputError, match="run") as err, folder_lock(tmp_path / "run"):
        pass
    assert "\n" not in str(err.value) and LOCK_NAME in str(err.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file") as err, folder_lock(tmp_path / "file" / "run"):
        pass
    assert "\n" not in str(err.value)


@contextlib.contextmanager
def read_only_copy(src: Path, where: Path) -> Iterator[Path]:
    """``src`` seen through a read-only bind mount (root ignores permission bits); skips where mount is refused."""
    view = where / "read-only-run"
    view.mkdir()
    ok = subprocess.run(["mount", "--bind", str(src), str(view)], capture_output=True).returncode == 0
    if not ok:
        pytest.skip("a read-only bind mount needs root with CAP_SYS_ADMIN; the lock's OSError mapping is tested above")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount the bind mount read-only here")
        yield view
    finally:
        subprocess.run(["umount", str(view)], capture_output=True)


def test_evaluate_and_report_on_a_read_only_run_are_one_line(run_path: Path, tmp_path: Path) -> None:
    with read_only_copy(run_path, tmp_path) as view:
        with pytest.raises(OSError):
            (view / "probe").write_text("x")
        for command in ("evaluate", "report"):
            line = one_line_error(cli(command, view), str(view))
            assert "writable" in line, line


def test_export_into_a_place_it_cannot_make_is_one_line(run_path: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    one_line_error(cli("export", run_path, "-o", tmp_path / "file" / "onnx"), "is a file")
    one_line_error(cli("export", run_path, "-o", tmp_path / "dangling"), "does not exist")
    with read_only_copy(run_path, tmp_path) as view:  # the default: RUN/export
        one_line_error(cli("export", view), str(view / "export"))


# ------------------------------------------------------------------------------------------ properties
KINDS = ["new", "regular", "link", "relative-link", "link-chain", "dangling", "loop", "fifo", "device", "folder",
         "under-a-file", "new-folder-in-new-folder"]


def make_target(base: Path, kind: str) -> Path:
    """A target of ``kind`` in the empty folder ``base``: the path a writer is given."""
    real, out = base / "real.bin", base / "out.bin"
    if kind == "regular":
        real.write_bytes(b"old")
        return real
    if kind == "new":
        return out
    if kind == "new-folder-in-new-folder":
        return base / "a" / "b" / "out.bin"
    if kind in ("link", "relative-link", "link-chain"):
        real.write_bytes(b"old")
        out.symlink_to(real if kind == "link" else "real.bin")
        if kind == "link-chain":
            (base / "chain.bin").symlink_to(out)
            return base / "chain.bin"
        return out
    if kind == "dangling":
        out.symlink_to(base / "missing" / "x.bin")
    elif kind == "loop":
        out.symlink_to(base / "loop.bin")
        (base / "loop.bin").symlink_to(out)
    elif kind == "fifo":
        return out  # made by fifo_reader
    elif kind == "device":
        return null_device(base)
    elif kind == "folder":
        out.mkdir()
    elif kind == "under-a-file":
        real.write_bytes(b"old")
        return real / "out.bin"
    return out


def snapshot_links(base: Path) -> dict[str, str]:
    return {p.name: os.readlink(p) for p in base.iterdir() if p.is_symlink()}


def write_with(writer: str, target: Path, data: bytes) -> None:
    if writer == "bytes":
        atomic_write_bytes(target, data)
    elif writer == "with":
        atomic_write_with(target, lambda fh: fh.write(data))
    else:  # the streaming writers' pair (code files, exports)
        tmp = temp_beside(target)
        tmp.write_bytes(data)
        move_into_place(tmp, target)


@FUZZ
@given(kind=st.sampled_from(KINDS), writer=st.sampled_from(["bytes", "with", "temp"]), data=st.binary(max_size=2048))
def test_every_writer_writes_through_or_refuses_in_one_line(kind: str, writer: str, data: bytes,
                                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("target")
    private_tmp = tmp_path_factory.mktemp("systemp")
    target = make_target(base, kind)
    links = snapshot_links(base)
    saved, tempfile.tempdir = tempfile.tempdir, str(private_tmp)
    try:
        with fifo_reader(target) if kind == "fifo" else contextlib.nullcontext([]) as got:
            try:
                write_with(writer, target, data)
            except AelabError as err:
                assert "\n" not in str(err) and str(err), err
                assert kind in ("dangling", "loop", "folder", "under-a-file"), (kind, err)
                failed = True
            else:
                failed = False
    finally:
        tempfile.tempdir = saved
    assert snapshot_links(base) == links, "a link was replaced or removed"
    assert temp_leftovers(base, private_tmp) == [], "a temporary file was left behind"
    if failed:
        return
    if kind == "fifo":
        assert stat.S_ISFIFO(os.lstat(target).st_mode) and b"".join(got) == data
    elif kind == "device":
        assert stat.S_ISCHR(os.lstat(target).st_mode)
    else:
        assert target.resolve().is_file() and target.read_bytes() == data


def test_a_code_file_through_a_link_and_into_a_fifo(tmp_path: Path) -> None:
    (tmp_path / "real.npy").write_bytes(b"")
    (tmp_path / "codes.npy").symlink_to("real.npy")
    with CodeWriter(tmp_path / "codes.npy", 2, 3) as w:
        w.write(0, np.ones((2, 3)))
        w.commit()
    assert (tmp_path / "codes.npy").is_symlink() and np.load(tmp_path / "real.npy").shape == (2, 3)
    with fifo_reader(tmp_path / "pipe.csv") as got:
        with CodeWriter(tmp_path / "pipe.csv", 1, 2) as w:
            w.write(0, np.zeros((1, 2)))
            w.commit()
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe.csv").st_mode) and b"".join(got).startswith(b"z0,z1")


FOLDER_KINDS = ["new", "empty", "link", "dangling", "loop", "file", "fifo", "under-a-file", "foreign", "ours",
                "ours-and-foreign", "dot"]


def make_folder(base: Path, kind: str) -> Path:
    out = base / "out"
    if kind in ("empty", "foreign", "ours", "ours-and-foreign", "dot"):
        out.mkdir()
    if kind in ("ours", "ours-and-foreign"):
        (out / "old.png").write_bytes(b"aelab's")
        (out / OUTPUT_LIST).write_text(json.dumps({"files": ["old.png", "../escape", "/etc/passwd"]}))
    if kind in ("foreign", "ours-and-foreign"):
        (out / "mine.txt").write_text("user's")
    if kind == "link":
        (base / "real").mkdir()
        out.symlink_to("real")
    elif kind == "dangling":
        out.symlink_to(base / "nowhere")
    elif kind == "loop":
        out.symlink_to(base / "loop")
        (base / "loop").symlink_to(out)
    elif kind == "file":
        out.write_bytes(b"x")
    elif kind == "fifo":
        os.mkfifo(out)
    elif kind == "under-a-file":
        (base / "f").write_bytes(b"x")
        return base / "f" / "out"
    return Path(".") if kind == "dot" else out


@FUZZ
@given(kind=st.sampled_from(FOLDER_KINDS), force=st.booleans(), fail=st.booleans(),
       names=st.lists(st.sampled_from(["a.png", "b.png", "index.csv"]), min_size=1, max_size=3, unique=True))
def test_staged_folders_land_in_the_real_folder_or_refuse_in_one_line(
        kind: str, force: bool, fail: bool, names: list[str], tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("folder")
    out = make_folder(base, kind)
    links = snapshot_links(base)
    user_files = {p: p.read_bytes() for p in base.rglob("mine.txt")}
    cwd = os.getcwd()
    os.chdir(base / "out" if kind == "dot" else base)
    try:
        try:
            with StagedDir(out, force) as stage:
                for n in names:
                    stage.write(n, n.encode())
                if fail:
                    raise KeyboardInterrupt
                stage.commit()
        except AelabError as err:
            assert "\n" not in str(err) and str(err)
            assert kind not in ("new", "empty", "link", "dot") and not (kind == "ours" and force), (kind, force, err)
            outcome = "refused"
        except KeyboardInterrupt:
            outcome = "stopped"
        else:
            outcome = "written"
    finally:
        os.chdir(cwd)
    assert snapshot_links(base) == links
    assert {p: p.read_bytes() for p in base.rglob("mine.txt")} == user_files, "a user's file was touched"
    assert temp_leftovers(base) == [] and not list(base.rglob(".aelab-stage-*"))
    real = Path(os.path.realpath(base / "out"))
    if outcome == "written":
        assert sorted(p for p in os.listdir(real) if p != OUTPUT_LIST) == sorted(names)
        assert all((real / n).read_bytes() == n.encode() for n in names)
        assert json.loads((real / OUTPUT_LIST).read_text())["files"] == sorted(names)
    elif kind == "new":
        assert not real.exists(), "a folder made for a failed job was left behind"
    if kind in ("ours", "ours-and-foreign") and outcome != "written":
        assert (real / "old.png").read_bytes() == b"aelab's"


LOCK_KINDS = ["new", "folder", "link", "dangling", "loop", "file", "fifo", "under-a-file", "lock-is-a-folder"]


@FUZZ
@given(kind=st.sampled_from(LOCK_KINDS), nested=st.booleans())
def test_the_folder_lock_is_taken_in_the_real_folder_or_refused_in_one_line(
        kind: str, nested: bool, tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("lock")
    folder = make_folder(base, {"folder": "empty", "lock-is-a-folder": "empty"}.get(kind, kind))
    if kind == "lock-is-a-folder":
        (folder / LOCK_NAME).mkdir()
    links = snapshot_links(base)
    try:
        with folder_lock(folder):
            if nested:
                with folder_lock(folder):  # re-entrant in a process
                    pass
            real = Path(os.path.realpath(folder))
            assert (real / LOCK_NAME).is_file() and str(os.getpid()) in (real / LOCK_NAME).read_text()
    except AelabError as err:
        assert "\n" not in str(err) and str(err)
        assert kind not in ("new", "folder", "link"), (kind, err)
    assert snapshot_links(base) == links
