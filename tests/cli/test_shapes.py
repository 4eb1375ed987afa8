"""Images at real sizes through the command line (issue 30, items 1 and 3): the resnet family trained and evaluated
on non-square and 64x64 colour images, ``--image-size HxW`` with ``--resize crop|pad|stretch``, the model chosen
for the data (resnet for your own images above 32 px, said in one line), the warning for a model that does not
scale, ``--levels``, the activation each family takes by default, and configurations written before all this.

Real data: patches cut from scikit-image's bundled colour photographs (nothing downloaded), the training patches
from three photographs and the test patches from a fourth (split by photograph). Tiny budgets: one epoch on a few
hundred images, a small latent; the point is that every path works and says what it did.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from aelab.cli import main
from aelab.config import (
    MAX_SIDE,
    RunConfig,
    dump_yaml,
    merge,
    parse_size,
    read_config_file,
    resolve,
    settle_model,
)
from aelab.data import load_dataset
from aelab.data.resize import target
from aelab.errors import ConfigError
from aelab.experiments.jobs import config_difference
from aelab.models import MODELS, build_model
from aelab.vocabulary import MODEL_NAMES, SCALING_MODELS, own_activation

TINY = ("--epochs", "1", "--threads", "1", "--batch-size", "32", "--precision", "fp32", "-q")
TRAIN_PHOTOS = ("chelsea", "rocket", "coffee")
TEST_PHOTO = "astronaut"


def cli(*args: str | Path) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def ok(result: object) -> object:
    assert result.exit_code == 0, result.output
    return result


def _patches(photo: np.ndarray, n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    ys, xs = rng.integers(0, photo.shape[0] - h, n), rng.integers(0, photo.shape[1] - w, n)
    return np.stack([photo[y:y + h, x:x + w] for y, x in zip(ys, xs, strict=True)])


def patch_set(folder: Path, h: int, w: int, per_photo: int = 80, test: int = 30) -> Path:
    """An .npz of (n, h, w, 3) uint8 patches: ``per_photo`` from each training photograph, ``test`` from the test
    photograph, labelled by photograph."""
    rng = np.random.default_rng(0)
    x = np.concatenate([_patches(getattr(skimage.data, p)(), per_photo, h, w, rng) for p in TRAIN_PHOTOS])
    x_test = _patches(getattr(skimage.data, TEST_PHOTO)(), test, h, w, rng)
    path = folder / f"patches-{h}x{w}.npz"
    np.savez(path, x=x, y=np.repeat(np.arange(3), per_photo), x_test=x_test, y_test=np.zeros(test, dtype=np.int64),
             classes=np.array(TRAIN_PHOTOS))
    return path


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return patch_set(tmp_path_factory.mktemp("wide"), 48, 80)


@pytest.fixture(scope="module")
def square(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return patch_set(tmp_path_factory.mktemp("square"), 64, 64)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image folder of 48x80 PNG patches (one class per photograph; the test photograph in test/)."""
    root = tmp_path_factory.mktemp("folder") / "photos"
    rng = np.random.default_rng(1)
    for split, names, count in (("train", TRAIN_PHOTOS, 12), ("test", (TEST_PHOTO,), 12)):
        for name in names:
            d = root / split / (name if split == "train" else TRAIN_PHOTOS[0])
            d.mkdir(parents=True, exist_ok=True)
            for i, patch in enumerate(_patches(getattr(skimage.data, name)(), count, 48, 80, rng)):
                Image.fromarray(patch).save(d / f"{name}-{i:02d}.png")
    return root


def config_of(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


# ------------------------------------------------------------------------------------------ the resnet family
@pytest.mark.parametrize("data", ["wide", "square"])
def test_resnet_trains_and_evaluates_on_real_colour_images(data: str, request: pytest.FixtureRequest,
                                                           tmp_path: Path) -> None:
    path = request.getfixturevalue(data)
    run = tmp_path / "run"
    res = ok(cli("train", "--dataset", f"npz:{path}", "--model", "resnet", "--latent", "16", "--no-report",
                 "--no-eval", "--out", run, *TINY))
    assert "note:" not in res.stderr and "warning:" not in res.stderr, res.stderr  # chosen, and built for it
    shape = json.loads((run / "data.json").read_text())["shape"]
    assert shape == ([3, 48, 80] if data == "wide" else [3, 64, 64])
    assert config_of(run)["model"] == "resnet" and config_of(run)["activation"] is None  # the family's own: silu
    ok(cli("evaluate", run))
    m = json.loads((run / "metrics.json").read_text())
    assert m["run"]["model"] == "resnet" and m["split"]["shape"] == shape and m["split"]["test"] == 30
    for side in ("autoencoder", "pca"):
        overall = m[side]["overall"]
        assert all(np.isfinite(overall[k]) for k in ("ssim", "psnr", "mse")), overall
    assert 0.0 < m["autoencoder"]["overall"]["ssim"] < 1.0


def test_own_images_above_32_px_train_resnet_by_default_and_say_so(wide: Path, tmp_path: Path) -> None:
    run = tmp_path / "default"
    res = ok(cli("train", "--dataset", f"npz:{wide}", "--latent", "8", "--train-limit", "64", "--no-eval",
                 "--no-report", "--out", run, *TINY))
    notes = [line for line in res.stderr.splitlines() if line.startswith(("note:", "warning:"))]
    assert notes == ["note: model: resnet, the default for your own images larger than 32 px on a side (these are "
                     "48x80); give --model to choose another"], res.stderr
    assert config_of(run)["model"] == "resnet"  # written settled: the run rebuilds without knowing the rule
    # at 32 px and below, the usual default, silently
    small = tmp_path / "small"
    res = ok(cli("train", "--dataset", f"npz:{wide}", "--image-size", "32", "--latent", "8", "--train-limit", "64",
                 "--no-eval", "--no-report", "--out", small, *TINY))
    assert config_of(small)["model"] == "conv-modified" and "note:" not in res.stderr


def test_a_model_that_does_not_scale_on_64_px_gets_one_warning_naming_resnet(square: Path, tmp_path: Path) -> None:
    res = ok(cli("train", "--dataset", f"npz:{square}", "--model", "conv-modified", "--latent", "8", "--width",
                 "0.25", "--train-limit", "64", "--no-eval", "--no-report", "--out", tmp_path / "run", *TINY))
    lines = [line for line in res.stderr.splitlines() if line.startswith(("note:", "warning:"))]
    assert len(lines) == 1 and lines[0].startswith("warning: --model conv-modified is built for images of about "
                                                   "28x28"), res.stderr
    assert "on 64x64 images" in lines[0] and "use --model resnet," in lines[0]
    assert config_of(tmp_path / "run")["model"] == "conv-modified"  # chosen: kept, only warned about


@pytest.mark.parametrize("args, says", [
    (("--model", "conv", "--levels", "3"), "error: --levels applies to the resnet models only (resnet, resnet-vae), "
                                           "not to conv; drop it or use --model resnet"),
    (("--levels", "2"), "not to conv-modified"),  # the default for the built-in 28x28 set
    (("--model", "vae", "--blocks", "2"), "use --model resnet-vae"),
    (("--model", "resnet", "--batch-norm"), "normalise with GroupNorm"),
    (("--image-size", "40x0"), "error: invalid image-size '40x0'; use --image-size N, HxW or H,W"),
    (("--resize", "pad"), "no --image-size is given"),
    (("--levels", "9", "--model", "resnet"), "error: invalid levels 9; use --levels between 1 and 8"),
])
def test_options_of_the_wrong_model_are_one_line_and_exit_2(args: tuple[str, ...], says: str,
                                                            tmp_path: Path) -> None:
    res = cli("train", *args, "--out", tmp_path / "run", *TINY)
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and says in lines[0], res.output
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ --image-size, --resize
def test_image_size_hxw_and_each_resize_mode_through_the_cli(wide: Path, photo_folder: Path, tmp_path: Path) -> None:
    seen = {}
    for mode in ("crop", "pad", "stretch"):
        run = tmp_path / mode
        ok(cli("train", "--dataset", f"npz:{wide}", "--image-size", "40x24", "--resize", mode, "--model", "resnet",
               "--latent", "4", "--width", "0.25", "--train-limit", "32", "--no-eval", "--no-report", "--out", run,
               *TINY))
        record = json.loads((run / "data.json").read_text())
        assert record["shape"] == [3, 40, 24]
        assert record["resize"]["size"] == [40, 24] and record["resize"]["mode"] == mode
        assert any(f"resized to 40x24 by {mode}" in n for n in record["notes"])
        assert config_of(run)["image_size"] == "40x24" and config_of(run)["resize"] == mode
        # images given to the trained model are resized the way it was trained
        res = ok(cli("encode", run, photo_folder / "test", "-o", tmp_path / f"{mode}.npy", "--resize"))
        assert f"are resized to 24x40 by {mode}" in res.stderr, res.stderr
        seen[mode] = load_dataset(f"npz:{wide}", image_size=(40, 24), resize=mode, val_fraction=0.0,
                                  progress=False).test.images.numpy()
    # pad: 48x80 (HxW) scaled by 0.3 to fit 40x24 is 14x24, centred: 13 black rows above and below; crop and
    # stretch fill the frame
    pad, crop, stretch = seen["pad"], seen["crop"], seen["stretch"]
    assert pad.shape == crop.shape == stretch.shape == (30, 3, 40, 24)
    assert not pad[:, :, :13].any() and not pad[:, :, -13:].any() and pad[:, :, 13:27].any()
    assert crop[:, :, :13].any() and stretch[:, :, :13].any()
    assert not np.array_equal(crop, stretch)


def test_the_padding_warning_is_the_models_own(tmp_path: Path, square: Path) -> None:
    """44 px: the conv path (halving twice) would take it as it is, the resnet family (3 levels) pads it to 48."""
    res = ok(cli("train", "--dataset", f"npz:{square}", "--image-size", "44", "--model", "resnet", "--latent", "4",
                 "--width", "0.25", "--train-limit", "32", "--no-eval", "--no-report", "--out", tmp_path / "r", *TINY))
    assert "warning: resnet pads 44x44 images with zeros to 48x48" in res.stderr, res.stderr
    assert str(target(32)) == "32" and str(target((48, 80), "pad")) == "48x80-pad"  # the caches' keys of before


def test_the_folder_decoder_resizes_by_the_same_owner(photo_folder: Path, wide: Path) -> None:
    """Folder images (decoded on every core) and array images (converted in memory) of the same pixels give the
    same pixels for each mode: one function resizes every image."""
    for mode in ("crop", "pad", "stretch"):
        folder = load_dataset(f"folder:{photo_folder}", image_size=(40, 24), resize=mode, val_fraction=0.0,
                              progress=False)
        assert folder.shape == (3, 40, 24) and folder.record()["resize"]["mode"] == mode
        original = np.stack([np.asarray(Image.open(p)) for p in sorted((photo_folder / "test").rglob("*.png"))])
        arrays = load_dataset_from(original, mode, tmp=photo_folder.parent)
        assert np.array_equal(folder.test.images.numpy(), arrays)


def load_dataset_from(x: np.ndarray, mode: str, tmp: Path) -> np.ndarray:
    path = tmp / f"same-{mode}.npz"
    np.savez(path, x=x, y=np.zeros(len(x), dtype=np.int64), x_test=x, y_test=np.zeros(len(x), dtype=np.int64))
    return load_dataset(f"npz:{path}", image_size=(40, 24), resize=mode, val_fraction=0.0,
                        progress=False).test.images.numpy()


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, MAX_SIDE), w=st.integers(1, MAX_SIDE), sep=st.sampled_from(["x", "X", ",", " x ", "×"]))
def test_the_size_parser_reads_every_form(h: int, w: int, sep: str) -> None:
    assert parse_size(f"{h}{sep}{w}") == [h, w]
    assert parse_size(str(h)) == parse_size(h) == [h, h]
    assert parse_size([h, w]) == [h, w]
    cfg = resolve(overrides={"dataset": "npz:x.npz", "image_size": f"{h}x{w}"})
    assert cfg.image_size == [h, w] and merge(RunConfig(), yaml.safe_load(dump_yaml(cfg)), "x") == cfg


@settings(max_examples=60, deadline=None)
@given(text=st.one_of(
    st.text(max_size=12).filter(lambda t: not t.strip().isdigit()),
    st.integers().filter(lambda n: not 1 <= n <= MAX_SIDE).map(str),
    st.tuples(st.integers(0, 10**5), st.integers(0, 10**5)).filter(
        lambda p: not all(1 <= v <= MAX_SIDE for v in p)).map(lambda p: f"{p[0]}x{p[1]}")))
def test_a_bad_size_is_one_line_naming_the_forms(text: str) -> None:
    try:
        size = parse_size(text)
    except ConfigError as err:
        message = str(err)
        assert "\n" not in message and message.startswith("invalid image-size ") and "N, HxW or H,W" in message
    else:  # the only strings that read are N, HxW, H,W with sides in range
        assert all(1 <= v <= MAX_SIDE for v in size)


# ------------------------------------------------------------------------------------------ activations, old configs
def test_each_family_takes_its_own_activation_by_default() -> None:
    for name in MODEL_NAMES:  # the vocabulary's own activation is each builder's default
        assert inspect.signature(MODELS[name]).parameters["activation"].default == own_activation(name), name
    resnet = build_model("resnet", **resolve(overrides={"model": "resnet"}).model_kwargs(), shape=(3, 40, 24))
    conv = build_model("conv-modified", **resolve().model_kwargs())
    assert any(type(m).__name__ == "SiLU" for m in resnet.modules()) and "activation" not in resnet.hparams
    assert not any(type(m).__name__ == "ReLU" for m in resnet.modules())
    assert any(type(m).__name__ == "ReLU" for m in conv.modules()) and conv.hparams["activation"] == "relu"
    chosen = build_model("resnet", 4, activation="gelu", shape=(3, 40, 24))
    assert chosen.hparams["activation"] == "gelu" and build_model("conv", 4, activation="silu").hparams[
        "activation"] == "silu"
    assert set(SCALING_MODELS) <= set(MODELS)


def test_a_configuration_written_before_sizes_and_own_activations_loads_the_same(tmp_path: Path) -> None:
    old = tmp_path / "config.yaml"  # as aelab wrote it before: activation relu, an int image size, no new keys
    text = dump_yaml(resolve(overrides={"dataset": f"npz:{tmp_path / 'x.npz'}", "model": "conv-modified"}))
    fields = yaml.safe_load(text)
    for key in ("resize", "levels", "blocks", "track", "tracking_uri"):
        fields.pop(key, None)
    fields.update(activation="relu", image_size=32)
    old.write_text(yaml.safe_dump(fields, sort_keys=False))
    cfg = merge(RunConfig(), read_config_file(old), str(old)).validate()
    assert (cfg.image_size, cfg.resize, cfg.activation, cfg.levels) == ([32, 32], "crop", "relu", None)
    assert cfg.data_kwargs()["image_size"] == (32, 32)
    before = build_model("conv-modified", 8, activation="relu", shape=(3, 32, 32))  # the model it had
    again = build_model(cfg.model, **dict(cfg.model_kwargs(), latent=8), shape=(3, 32, 32))
    assert again.hparams == before.hparams
    assert [tuple(p.shape) for p in again.parameters()] == [tuple(p.shape) for p in before.parameters()]
    # the same run asked for today (activation: the model's own) is that run: experiments do not train it again
    today = dataclasses.replace(cfg, activation=None)
    assert config_difference(cfg, today) is None
    assert config_difference(cfg, dataclasses.replace(today, model="resnet")) is not None


def test_the_model_is_settled_once_the_size_is_known() -> None:
    own = resolve(overrides={"dataset": "folder:/photos"})
    assert own.model is None and own.model_label == "auto"  # its size is unknown until the images are read
    assert settle_model(own, (3, 64, 64))[0].model == "resnet"
    assert settle_model(own, (3, 32, 32)) == (dataclasses.replace(own, model="conv-modified"), None)
    assert resolve(overrides={"dataset": "folder:/p", "image_size": "20x40"}).model_label == "resnet"
    assert resolve(overrides={"image_size": 64}).model_label == "conv-modified"  # built-in: not "your own images"
    with pytest.raises(ConfigError, match="--levels applies to the resnet models only"):
        settle_model(resolve(overrides={"dataset": "folder:/p", "levels": 2}), (1, 28, 28))
