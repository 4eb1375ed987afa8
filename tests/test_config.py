"""Configuration: presets, files, precedence and validation."""

from __future__ import annotations

import pytest

from aelab.config import PRESETS, RunConfig, dump_yaml, merge, read_config_file, resolve
from aelab.errors import ConfigError


def test_presets_people_ask_for():
    assert {"seed-2d", "seed-64", "seed-128", "seed-256", "mnist-dense-2d"} <= set(PRESETS)
    s2 = resolve("seed-2d")
    assert (s2.model, s2.latent, s2.loss, s2.optimizer, s2.dataset) == ("conv", 2, "bce", "rmsprop",
                                                                         "fashion-mnist")
    assert resolve("seed-64").latent == 64 and resolve("seed-64").model == "conv"
    assert resolve("seed-256").model == "conv-modified" and resolve("seed-128").latent == 128
    m = resolve("mnist-dense-2d")
    assert (m.dataset, m.model, m.latent, m.loss) == ("mnist", "dense", 2, "mse")


def test_precedence_preset_file_command_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("latent: 8\nepochs: 3\nclasses: T-shirt/top,Trouser\n")
    cfg = resolve("seed-2d", f, {"epochs": 5})
    assert (cfg.latent, cfg.epochs, cfg.optimizer) == (8, 5, "rmsprop")
    assert cfg.classes == ["T-shirt/top", "Trouser"]
    t = tmp_path / "c.toml"
    t.write_text('model = "dense"\nlr = 0.01\nbatch-norm = true\n')
    cfg = resolve(None, t)
    assert (cfg.model, cfg.lr, cfg.batch_norm) == ("dense", 0.01, True)


def test_resolved_config_round_trips(tmp_path):
    cfg = resolve("seed-2d", overrides={"classes": ["0", "1"], "max_minutes": 2.5})
    f = tmp_path / "config.yaml"
    f.write_text(dump_yaml(cfg))
    assert merge(RunConfig(), read_config_file(f), "x") == cfg


@pytest.mark.parametrize("overrides, match", [
    ({"latent": 0}, "invalid latent 0"),
    ({"batch_size": 0}, "invalid batch-size 0"),
    ({"loss": "l1"}, "unknown loss 'l1'"),
    ({"dataset": "cifar"}, "unknown dataset 'cifar'"),
    ({"lr": -1}, "invalid lr"),
    ({"colour": "red"}, "unknown option 'colour'"),
    ({"epochs": "many"}, "not a valid int"),
])
def test_bad_values_are_named(overrides, match):
    with pytest.raises(ConfigError, match=match):
        resolve(None, None, overrides)


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("latent: [1,\n")
    with pytest.raises(ConfigError, match="cannot be parsed"):
        read_config_file(bad)


def test_own_data_sets_are_named_with_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = resolve(overrides={"dataset": "folder:my images", "image_size": 32, "channels": 3})
    assert cfg.dataset == f"folder:{tmp_path / 'my images'}" and cfg.dataset_name == "my images"
    assert cfg.data_kwargs()["image_size"] == (32, 32) and cfg.data_kwargs()["channels"] == 3
    assert resolve(overrides={"dataset": "npz:d/digits.npz"}).dataset_name == "digits"
    assert resolve(overrides={"dataset": "mnist"}).dataset_name == "mnist"
    f = tmp_path / "config.yaml"
    f.write_text(dump_yaml(cfg))
    assert merge(RunConfig(), read_config_file(f), "x").validate() == cfg  # a run folder is read from anywhere
    for bad, match in (({"dataset": "folder:"}, "names no path"), ({"dataset": "tar:x.tar"}, "unknown dataset"),
                       ({"channels": 2}, "invalid channels 2"), ({"image_size": 0}, "invalid image-size 0"),
                       ({"test_fraction": 1.0}, "invalid test-fraction")):
        with pytest.raises(ConfigError, match=match):
            resolve(overrides=bad)
