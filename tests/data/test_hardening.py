"""Hardening of the data (issue 29): every image mode, every number in a data file, every image aelab reads.

One regression test per case of the issue, each failing on the code before the fix (checked by running this file
against that code), and property tests (hypothesis) over the class of each case:

- case 4: labels are mapped to the classes that occur (a label of 10^12 or 3,000,000 is one class, named by it);
- case 6: pixels are scaled by their format's range, never by the image's own maximum (16-bit: 65535; "I": the
  range of the integer the file stores; "F": as stored, in [0, 1], else one line), for every Pillow mode;
- case 7: duplicate class names are refused; a rewrite that keeps a file's size and modification time is seen by
  the decoded cache;
- case 9: a decompression bomb is one line in every command that reads images (the one decoder,
  ``pixels.open_image``); images under 3 pixels a side are refused at load (SSIM's smallest window) and SSIM is
  finite for any size; a resize that would not fit in memory is refused before it is made.

The images are scikit-image's photographs (the camera man, the astronaut) saved with Pillow in each mode.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data as photos
from sklearn.datasets import load_digits

from aelab.data import load_dataset, own, read_image
from aelab.data.arrays import check_classes, to_labels
from aelab.data.pixels import IMAGE_FORMATS, pil_to_array
from aelab.errors import DataError, InputError
from tests.data.test_own import assert_one_line, cli  # one CLI runner and one-line check for the data tests

FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CAMERA = np.ascontiguousarray(photos.camera()[::16, ::16])        # 32x32 grey, 0..255
ASTRONAUT = np.ascontiguousarray(photos.astronaut()[::16, ::16])  # 32x32 RGB


def digits(**extra: np.ndarray) -> dict[str, np.ndarray]:
    d = load_digits()
    return {"x": (d.images / 16.0).astype(np.float32), "y": d.target.astype(np.int64)} | extra


def one_line_error(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and text, text
    return text


# ================================================================================= case 4: labels
def test_case4_a_huge_label_is_one_class_named_by_it(tmp_path):
    """Digits with the nines labelled 3,000,000 (then 10^12): ten classes, the nines one of them; data.json stays
    small. Before: 3,000,001 class names (a 44 MB data.json), and a MemoryError for 10^12."""
    d = digits()
    for big in (3_000_000, 10**12):
        y = np.where(d["y"] == 9, big, d["y"])
        np.savez(tmp_path / "big.npz", x=d["x"], y=y)
        b = load_dataset(f"npz:{tmp_path / 'big.npz'}", val_fraction=0.0, progress=False)
        assert b.classes == (*[str(k) for k in range(9)], str(big))
        assert len(json.dumps(b.record())) < 2000
        labels = np.concatenate([b.train.labels.numpy(), b.test.labels.numpy()])
        assert [int((labels == k).sum()) for k in range(10)] == [int((y == v).sum()) for v in (*range(9), big)]


label_arrays = st.one_of(
    st.lists(st.integers(-2**63, 2**63 - 1), min_size=1, max_size=30).map(lambda v: np.array(v, np.int64)),
    st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=30).map(lambda v: np.array(v, np.uint64)),
    st.lists(st.integers(-2**52, 2**52), min_size=1, max_size=30).map(lambda v: np.array(v, np.float64)),
    st.lists(st.sampled_from([0, 1, 2, 7, 255]), min_size=1, max_size=30).map(lambda v: np.array(v, np.uint8)),
    st.lists(st.sampled_from([b"cat", b"dog", "caf\u00e9".encode()]), min_size=1, max_size=30).map(np.array),
    st.lists(st.text(max_size=6), min_size=1, max_size=30).map(np.array),
)


@FEW
@given(y=label_arrays, split=st.integers(0, 30))
def test_labels_are_the_classes_that_occur_sorted_and_named_by_their_value(y, split):
    """Huge, negative, sparse, float, string labels, over two splits: one class per distinct value, sorted, named
    by it; equal labels stay equal and their order is kept."""
    split = min(split, len(y))
    (a, b), names = to_labels([(y[:split], split, "y"), (y[split:], len(y) - split, "y_test")], None)
    codes = np.concatenate([a, b])
    keys = [v.decode() if isinstance(v, bytes) else v if isinstance(v, str) else int(v) for v in y.tolist()]
    assert len(names) == len(set(keys)) == len(set(names))
    assert [names[c] for c in codes] == [str(k) for k in keys]
    assert all((codes[i] < codes[j]) == (keys[i] < keys[j]) for i in range(len(y)) for j in range(len(y)))


@FEW
@given(n_classes=st.integers(1, 8), y=st.lists(st.integers(-3, 12), min_size=1, max_size=20), dup=st.booleans())
def test_labels_index_the_given_class_names_or_are_one_line(n_classes, y, dup):
    """Integer labels with the file's class names: indices into them, any other number one line; a name given
    twice one line."""
    classes = tuple(f"c{k}" for k in range(n_classes))
    values = np.array(y)
    if dup:
        with pytest.raises(DataError, match=r"the class name 'c0' is given twice \(classes\[0\] and") as err:
            check_classes((*classes, "c0"), "f.npz: classes")
        one_line_error(err.value)
    elif values.min() < 0 or values.max() >= n_classes:
        with pytest.raises(DataError, match="class names are given") as err:
            to_labels([(values, len(values), "y")], classes)
        one_line_error(err.value)
    else:
        (codes,), names = to_labels([(values, len(values), "y")], classes)
        assert names == classes and codes.tolist() == y


# ================================================================================= case 6: pixel ranges
def save(im: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def test_case6_a_dark_16_bit_png_stays_dark_and_every_image_is_scaled_alike(tmp_path):
    """The camera man as 16-bit PNGs: 8-bit values in 16 bits (257x darker than the photo) and the full 16-bit
    range. Both are scaled by 65535. Before: the dark one by its own maximum, 257x too bright."""
    dark = CAMERA.astype(np.uint16)
    full = CAMERA.astype(np.uint16) * 257
    root = tmp_path / "sixteen"
    for k in range(6):
        save(Image.fromarray(np.roll(dark, k, axis=1)), root / "dark" / f"{k}.png")
        save(Image.fromarray(np.roll(full, k, axis=1)), root / "full" / f"{k}.png")
    assert Image.open(root / "dark" / "0.png").mode == "I;16"
    assert np.array_equal(read_image(root / "dark" / "0.png", (1, 32, 32)), np.rint(dark / 257.0).astype(np.uint8))
    assert np.array_equal(read_image(root / "full" / "0.png", (1, 32, 32)), CAMERA)
    b = load_dataset(f"folder:{root}", val_fraction=0.0, test_fraction=0.34, progress=False)
    images = np.concatenate([b.train.images.numpy(), b.test.images.numpy()])
    labels = np.concatenate([b.train.labels.numpy(), b.test.labels.numpy()])
    assert images[labels == b.classes.index("dark")].max() == 1  # 255 / 257, rounded
    assert images[labels == b.classes.index("full")].max() == CAMERA.max()


def test_case6_float_pixels_are_taken_as_stored_and_checked(tmp_path):
    """A float TIFF of the camera man in [0, 1] reads as the photo; one hot pixel of 1.5 is one line (before: the
    whole image divided by 255, almost black)."""
    ok = save(Image.fromarray(CAMERA.astype(np.float32) / 255.0), tmp_path / "f" / "ok.tif")
    assert Image.open(ok).mode == "F"
    assert np.array_equal(read_image(ok, (1, 32, 32)), CAMERA)
    hot = CAMERA.astype(np.float32) / 255.0
    hot[5, 5] = 1.5
    bad = save(Image.fromarray(hot), tmp_path / "f" / "hot.tif")
    with pytest.raises(InputError, match=r"hot.tif: holds float pixels from 0.01176 to 1.5 .*in \[0, 1\]; clip or "
                                         r"scale") as err:
        read_image(bad, (1, 32, 32))
    one_line_error(err.value)
    res = cli("train", "--dataset", f"folder:{tmp_path / 'f'}", "--out", tmp_path / "run", "-q")
    assert_one_line(res, "hot.tif", "float pixels", "[0, 1]")
    assert not (tmp_path / "run").exists()


@FEW
@given(scale=st.integers(0, 257), mode=st.sampled_from(["I;16", "I;16B", "I;16L"]),
       fmt=st.sampled_from(["PNG", "TIFF", None]), constant=st.booleans())
def test_16_bit_pixels_are_scaled_by_65535_never_by_the_image_maximum(scale, mode, fmt, constant, tmp_path_factory):
    """The camera man (or a constant image) at any brightness, in every 16-bit mode, in memory, PNG or TIFF:
    pixel p becomes round(p / 257): a dark image stays dark."""
    pixels = np.full((32, 32), scale * 255, np.uint16) if constant else (CAMERA.astype(np.uint16) * scale)
    im = Image.frombytes(mode, (32, 32), pixels.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    expected = np.rint(pixels / 257.0).astype(np.uint8)
    if fmt is not None:
        path = tmp_path_factory.mktemp("deep") / f"x.{fmt.lower()}"
        try:
            im.save(path, format=fmt)
        except OSError:  # this Pillow cannot write the mode in that format (I;16L as PNG)
            return
        assert np.array_equal(read_image(path, (1, 32, 32)), expected)
    assert np.array_equal(pil_to_array(im, 1), expected)
    assert np.array_equal(pil_to_array(im, 3), np.repeat(expected[..., None], 3, axis=-1))


@FEW
@given(value=st.integers(-2**31, 2**31 - 1), tiff=st.booleans())
def test_32_bit_integer_pixels_are_scaled_by_their_range_and_negatives_refused(value, tiff, tmp_path_factory):
    """Mode "I" (a 32-bit signed TIFF, or an image in memory): scaled by 2^31 - 1; a negative pixel is one line."""
    im = Image.fromarray(np.full((8, 8), value, np.int32))
    assert im.mode == "I"
    if tiff:
        path = tmp_path_factory.mktemp("i32") / "x.tif"
        im.save(path)
        im = Image.open(path)
        im.load()
    if value < 0:
        with pytest.raises(InputError, match="negative pixels") as err:
            pil_to_array(im, 1)
        one_line_error(err.value)
    else:
        assert (pil_to_array(im, 1) == round(value * 255 / (2**31 - 1))).all()


def integer_tiff(path: Path, a: np.ndarray, bits: int, signed: bool) -> Path:
    """A minimal little-endian TIFF of integer samples (BitsPerSample, SampleFormat), which Pillow opens as "I"
    (Pillow writes "I" images as 32-bit signed only)."""
    h, w = a.shape
    data = a.astype(f"<{'i' if signed else 'u'}{bits // 8}").tobytes()
    tags = [(256, 3, w), (257, 3, h), (258, 3, bits), (259, 3, 1), (262, 3, 1), (273, 4, 8), (277, 3, 1),
            (278, 3, h), (279, 4, len(data)), (339, 3, 2 if signed else 1)]
    out = b"II*\x00" + struct.pack("<I", 8 + len(data)) + data + struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        out += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else
                                                     struct.pack("<I", value))
    path.write_bytes(out + struct.pack("<I", 0))
    return path


def test_i_images_are_scaled_by_the_range_of_the_integers_their_tiff_stores(tmp_path):
    """Mode "I" is scaled by the range of the integer its file stores: 32767 for 16-bit signed samples (not
    2^31 - 1, which would make them black), 2^32 - 1 for 32-bit unsigned ones (whose values over 2^31 Pillow's
    signed "I" wraps round); a negative sample is one line naming the file."""
    path = integer_tiff(tmp_path / "s16.tif", CAMERA.astype(np.int64) * 128, 16, True)  # 0..32640
    assert Image.open(path).mode == "I"
    expected = np.rint(CAMERA.astype(np.int64) * 128 * 255 / 32767).astype(np.uint8)
    assert np.array_equal(read_image(path, (1, 32, 32)), expected)
    path = integer_tiff(tmp_path / "u32.tif", CAMERA.astype(np.uint64) * 16843009, 32, False)  # 0..2^32 - 1
    assert Image.open(path).mode == "I"
    assert np.array_equal(read_image(path, (1, 32, 32)), CAMERA)
    negative = integer_tiff(tmp_path / "neg.tif", CAMERA.astype(np.int64) - 100, 16, True)
    with pytest.raises(InputError, match=r"neg.tif: holds negative pixels \(-97, Pillow mode I\); give pixels from 0 "
                                         r"to 32,767"):
        read_image(negative, (1, 32, 32))


@FEW
@given(value=st.one_of(st.floats(0, 1), st.floats(allow_nan=True, allow_infinity=True)), tiff=st.booleans())
def test_float_pixels_are_taken_as_stored_in_0_1_or_one_line(value, tiff, tmp_path_factory):
    with np.errstate(over="ignore"):
        im = Image.fromarray(np.full((8, 8), value, np.float32))
    if tiff:
        path = tmp_path_factory.mktemp("f32") / "x.tif"
        im.save(path)
        im = Image.open(path)
        im.load()
    with np.errstate(over="ignore"):
        stored = float(np.float32(value))
    if np.isfinite(stored) and -1e-6 <= stored <= 1 + 1e-6:
        assert (pil_to_array(im, 1) == np.clip(np.rint(stored * 255), 0, 255)).all()
    else:
        with pytest.raises(InputError, match="NaN or infinite|float pixels from") as err:
            pil_to_array(im, 1)
        one_line_error(err.value)


EIGHT_BIT_MODES = sorted(m for m in Image.MODES if m not in ("I", "F") and not m.startswith("I;16"))


@FEW
@given(mode=st.sampled_from(EIGHT_BIT_MODES), grey=st.integers(0, 255), alpha=st.sampled_from([255, 128, 0]))
def test_every_8_bit_mode_keeps_a_constant_grey_laid_on_black(mode, grey, alpha):
    """A constant grey (with an alpha where the mode has one) in every other Pillow mode reads back as that grey,
    laid on black: never stretched to the image's range. Dithered modes (1, P) keep it on average."""
    rgba = Image.new("RGBA", (32, 32), (grey, grey, grey, alpha))
    has_alpha = "A" in Image.new(mode, (1, 1)).getbands() or "a" in Image.new(mode, (1, 1)).getbands() \
        or mode in ("PA",)
    im = rgba.convert(mode) if has_alpha else rgba.convert("RGB").convert(mode)
    if mode == "La":  # Pillow's RGBA -> La drops the alpha: the premultiplied grey written as it is stored
        im = Image.frombytes("La", (32, 32), bytes([round(grey * alpha / 255), alpha]) * (32 * 32))
    expected = grey * alpha / 255 if has_alpha else grey
    for channels in (1, 3):
        a = pil_to_array(im, channels)
        assert a.dtype == np.uint8 and a.shape == ((32, 32) if channels == 1 else (32, 32, 3))
        tolerance = 12 if mode in ("1", "P", "PA") else 3
        assert abs(float(a.mean()) - expected) <= tolerance, (mode, grey, alpha, a.mean())


SAVED = [(m, f) for m in sorted(Image.MODES) for f in ("PNG", "TIFF", "BMP", "GIF", "JPEG")]


@pytest.fixture(scope="module")
def mode_files(tmp_path_factory) -> list[tuple[str, str, Path]]:
    """The astronaut in every Pillow mode, saved in every format that takes it."""
    folder = tmp_path_factory.mktemp("modes")
    rgb = Image.fromarray(ASTRONAUT)
    out = []
    for mode, fmt in SAVED:
        im = rgb.convert(mode) if not (mode == "I" or mode == "F" or mode.startswith("I;16")) else \
            Image.fromarray(np.asarray(rgb.convert("L")).astype(np.float32) / 255) if mode == "F" else \
            rgb.convert("L").convert(mode)
        path = folder / f"{mode.replace(';', '_')}.{fmt.lower()}"
        try:
            im.save(path, format=fmt)
        except (OSError, ValueError, KeyError):
            continue
        out.append((mode, fmt, path))
    return out


def test_every_mode_pillow_can_save_is_read_in_one_go_or_one_line(mode_files):
    assert len(mode_files) > 30 and {fmt for _, fmt, _ in mode_files} == set(IMAGE_FORMATS)
    for mode, fmt, path in mode_files:
        for shape in ((1, 32, 32), (3, 32, 32), (1, 16, 16)):
            a = read_image(path, shape)
            assert a.dtype == np.uint8 and a.shape == (shape[1:] if shape[0] == 1 else shape), (mode, fmt)
        if fmt in ("PNG", "TIFF", "BMP") and mode in ("L", "RGB"):
            with Image.open(path) as im:
                im.load()
                assert np.array_equal(read_image(path, (1, 32, 32)), pil_to_array(im.convert("L"), 1))


# ================================================================================= case 7: classes and the cache
def test_case7_duplicate_class_names_are_one_line(tmp_path):
    """classes ["0", ..., "8", "0"]: refused (before: the nines were counted as zeros in the per-class metrics)."""
    np.savez(tmp_path / "dup.npz", **digits(classes=np.array([*[str(k) for k in range(9)], "0"])))
    with pytest.raises(DataError, match=r"dup.npz: classes: the class name '0' is given twice \(classes\[0\] and "
                                        r"classes\[9\]\)") as err:
        load_dataset(f"npz:{tmp_path / 'dup.npz'}", val_fraction=0.0, progress=False)
    one_line_error(err.value)
    res = cli("train", "--dataset", f"npz:{tmp_path / 'dup.npz'}", "--out", tmp_path / "run", "--epochs", "1", "-q")
    assert_one_line(res, "dup.npz", "given twice")
    assert not (tmp_path / "run").exists()


def test_case7_a_rewrite_that_keeps_size_and_modification_time_is_seen_by_the_cache(tmp_path):
    """BMP crops of the astronaut (every file the same size): one is overwritten with another crop and its
    modification time put back. The cache is not used (before: the old pixels came from the cache)."""
    root = tmp_path / "bmp"
    photo = photos.astronaut()
    for k in range(12):
        save(Image.fromarray(photo[16 * k:16 * k + 16, 100:116]), root / "a" / f"{k:02d}.bmp")
    first = load_dataset(f"folder:{root}", val_fraction=0.0, progress=False)
    assert "cached in" in first.notes[-1]
    victim = root / "a" / "03.bmp"
    before = victim.stat()
    Image.fromarray(photo[300:316, 300:316]).save(victim)
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = victim.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    second = load_dataset(f"folder:{root}", val_fraction=0.0, progress=False)
    assert "decoded" in second.notes[0], second.notes
    assert second.fingerprint["content"] != first.fingerprint["content"]
    third = load_dataset(f"folder:{root}", val_fraction=0.0, progress=False)
    assert "from the cache" in third.notes[0] and third.fingerprint == second.fingerprint


# ================================================================================= case 9: bombs, tiny images, memory
@pytest.fixture(scope="module")
def bomb_folder(tmp_path_factory) -> Path:
    """A 27 kB PNG of 15000x15000 pixels: over twice Pillow's decompression-bomb limit."""
    folder = tmp_path_factory.mktemp("bomb") / "in"
    folder.mkdir()
    Image.new("1", (15000, 15000)).save(folder / "bomb.png")
    save(Image.fromarray(CAMERA[:28, :28]), folder / "fine.png")
    return folder


def test_case9_a_decompression_bomb_is_one_line_in_every_command(bomb_folder, run_path, tmp_path):
    """encode, reconstruct and score (before: a DecompressionBombError traceback) and train."""
    for args in (("encode", run_path, bomb_folder, "-o", tmp_path / "c.npy"),
                 ("reconstruct", run_path, bomb_folder, "-o", tmp_path / "rec"),
                 ("score", run_path, bomb_folder, "-o", tmp_path / "s.csv"),
                 ("train", "--dataset", f"folder:{bomb_folder}", "--out", tmp_path / "run", "-q")):
        assert_one_line(cli(*args), "bomb.png", "decompression-bomb limit", "downscale the image or remove it")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_case9_an_image_over_the_limit_pillow_only_warns_about_is_refused_too(run_path, tmp_path, monkeypatch):
    """Between Pillow's limit and twice it, Pillow only warns and decodes: refused in one line as well (before:
    decoded, with a warning of Pillow's)."""
    folder = tmp_path / "in"
    save(Image.fromarray(CAMERA[:28, :28]), folder / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 784 pixels: over the limit, under twice it
    assert_one_line(cli("encode", run_path, folder, "-o", tmp_path / "c.npy"), "big.png", "decompression-bomb")
    assert not (tmp_path / "c.npy").exists()


def test_case9_images_one_pixel_high_are_refused_when_loaded(tmp_path):
    """Rows of the camera man as 1x32 images (before: trained, then a ZeroDivisionError in SSIM-7's window)."""
    np.savez(tmp_path / "rows.npz", x=CAMERA.reshape(32, 1, 32).repeat(2, axis=0))
    res = cli("train", "--dataset", f"npz:{tmp_path / 'rows.npz'}", "--out", tmp_path / "run", "--epochs", "1",
              "--model", "dense", "--latent", "8", "-q")
    assert_one_line(res, "rows.npz", "images of 32x1 pixels", "at least 3 pixels a side", "--image-size 3")
    assert not (tmp_path / "run").exists()


@FEW
@given(h=st.integers(1, 6), w=st.integers(1, 6), size=st.sampled_from([None, 1, 2, 3, 5]))
def test_tiny_images_load_from_3_pixels_a_side_else_one_line(h, w, size, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "t.npz"
    np.savez(path, x=np.ascontiguousarray(np.resize(CAMERA, (12, h, w))))
    final = (size, size) if size else (h, w)
    if min(final) < own.MIN_SIDE:
        with pytest.raises(DataError, match="at least 3 pixels a side") as err:
            load_dataset(f"npz:{path}", val_fraction=0.0, image_size=size, progress=False)
        one_line_error(err.value)
    else:
        b = load_dataset(f"npz:{path}", val_fraction=0.0, image_size=size, progress=False)
        assert b.shape == (1, *final)


def test_case9_a_resize_that_does_not_fit_in_memory_is_refused_before_it_is_made(tmp_path, monkeypatch):
    """The digits (115 kB) resized to 256x256 (118 MB) with 20 MB available: refused, naming the resize (before:
    the memory check counted the 115 kB only and the resize went ahead)."""
    np.savez(tmp_path / "digits.npz", **digits())
    monkeypatch.setattr(own, "available_memory", lambda: 20_000_000)
    load_dataset(f"npz:{tmp_path / 'digits.npz'}", val_fraction=0.0, progress=False)  # as it is: fits
    with pytest.raises(DataError, match=r"digits.npz: 1,797 images need 118.9 MB of memory to be read and "
                                        r"converted.*--image-size") as err:
        load_dataset(f"npz:{tmp_path / 'digits.npz'}", val_fraction=0.0, image_size=256, progress=False)
    one_line_error(err.value)
    with pytest.raises(DataError, match=r"converted to 8x8 RGB .*--image-size"):
        own.conform(np.zeros((400_000, 1, 8, 8), np.uint8), 3, None, "many")


def test_a_built_in_data_set_resized_beyond_memory_is_one_line(data_root):
    with pytest.raises(DataError, match=r"fashion-mnist: 60,000 images converted to 4096x4096 grey need 1006.6 GB"):
        load_dataset("fashion-mnist", image_size=4096, progress=False)


def test_an_idx_file_is_never_expanded_beyond_what_its_header_announces(tmp_path):
    """A gzip IDX file whose header says 12 images of 4x4 but which expands to 200 MB: refused having read 193
    bytes of it (before: all 200 MB decompressed into memory first)."""
    folder = tmp_path / "idx"
    folder.mkdir()
    head = struct.pack(">HBB3I", 0, 8, 3, 12, 4, 4)
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as fh:
        fh.write(head)
        chunk = bytes(1 << 20)
        for _ in range(200):
            fh.write(chunk)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="holds more than the 192 bytes its header announces"):
            load_dataset(f"idx:{folder}", val_fraction=0.0, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, peak
    shutil.rmtree(folder)
