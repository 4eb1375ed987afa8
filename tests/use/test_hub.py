"""A run in the Hugging Face Hub's format: ``aelab export RUN --format hub`` writes config.json, model.safetensors
and a model card; ``aelab.load`` reads the folder back in a fresh process with the run's reconstructions;
``aelab push`` fails in one line without huggingface_hub, offline, or with a bad repository id (the upload
itself is untested: no route to the Hub here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import ModelCard
from safetensors.torch import load_file

import aelab
from aelab.cli import main
from aelab.data import load_dataset
from aelab.errors import RunError
from aelab.evaluation.evaluate import COLUMNS
from aelab.models import count_parameters
from aelab.report import write_report
from aelab.runs import Run
from aelab.use.hub import export_hub

FRESH = """
import sys
sys.modules["huggingface_hub"] = None  # loading needs no Hub package
import numpy as np
import aelab
from safetensors.torch import load_file
hub, run, images, out = sys.argv[1:]
model = aelab.load(hub)
x = np.load(images)
np.savez(out, hub=model.reconstruct(x), run=aelab.load(run).reconstruct(x))
print(len(load_file(hub + "/model.safetensors")), model.latent, model.classes[0], model.config.model)
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_run) -> Run:
    """A copy of the real evaluated tiny run with its report (so its reconstruction figure)."""
    r = Run(tmp_path_factory.mktemp("hub") / "tiny16")
    shutil.copytree(tiny_run[0].path, r.path)
    write_report(r, tsne_sample=10)
    return r


@pytest.fixture(scope="module")
def hub(run: Run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    res = CliRunner().invoke(main, ["export", str(run.path), "--format", "hub", "-o",
                                    str(tmp_path_factory.mktemp("out") / "shared")])
    assert res.exit_code == 0, res.output
    return Path(res.stdout.split(" -> ")[1].split(" (")[0])


def test_a_fresh_process_loads_it_with_the_runs_reconstructions(run: Run, hub: Path, tmp_path: Path) -> None:
    images = load_dataset("fashion-mnist", test_limit=300).test.images.numpy()
    np.save(tmp_path / "x.npy", images)
    out = subprocess.run([sys.executable, "-c", FRESH, str(hub), str(run.path), str(tmp_path / "x.npy"),
                          str(tmp_path / "r.npz")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    n, latent, first_class, model = out.stdout.split()[:3] + [out.stdout.split()[-1]]
    assert int(latent) == 16 and model == "conv-modified" and first_class == "T-shirt/top" and int(n) > 10
    got = np.load(tmp_path / "r.npz")
    assert np.array_equal(got["hub"], got["run"])  # the same weights and arithmetic: bit for bit
    # ... and what this process (another thread count: another order of sums) makes of the run, to rounding
    assert np.allclose(got["hub"], aelab.load(run.path).reconstruct(images), rtol=0, atol=1e-5)


def test_weights_are_plain_safetensors_of_the_runs_model(run: Run, hub: Path) -> None:
    weights = load_file(hub / "model.safetensors")
    expected = run.load_model("best").state_dict()
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)


def test_config_and_card(run: Run, hub: Path) -> None:
    metrics = json.loads(run.metrics.read_text())
    model = run.load_model("best")
    config = json.loads((hub / "config.json").read_text())
    assert config["format"] == "aelab-hub-1" and config["aelab_version"] == aelab.__version__
    assert config["hparams"] == model.hparams and config["parameters"] == count_parameters(model)
    assert config["image_shape"] == [1, 28, 28] and config["recipe"]["latent"] == 16
    card = ModelCard.load(hub / "README.md")  # huggingface_hub's own parser of the front matter
    assert card.data.library_name == "aelab" and card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert {"autoencoder", "fashion-mnist"} <= set(card.data.tags) and card.data.metrics == ["ssim", "psnr", "mse"]
    text = card.text
    for section in ("## Architecture", "## Data", "## Training recipe", "## Test metrics", "## Reconstructions",
                    "## Intended use and limits"):
        assert section in text, section
    assert f"| parameters | {count_parameters(model):,} |" in text
    assert metrics["split"]["fingerprint"] in text and "Ankle boot" in text
    assert f"train_limit: {run.config().train_limit}" in text
    ae, pca = metrics["autoencoder"]["overall"], metrics["pca"]["overall"]
    for key, label, fmt in COLUMNS:
        assert f"| {label} | {fmt.format(ae[key])} | {fmt.format(pca[key])} |" in text, key
    figure = text.split("![")[1].split("](")[1].split(")")[0]
    assert (hub / figure).read_bytes() == (run.figures / "recon_random.png").read_bytes()
    for name in ("README.md", "config.json"):  # a folder to share holds no local path
        body = (hub / name).read_text()
        assert str(run.path) not in body and metrics["split"]["source"] not in body


def test_an_unevaluated_run_or_a_full_folder_is_one_line(run: Run, hub: Path, tmp_path: Path) -> None:
    bare = Run(tmp_path / "bare")
    shutil.copytree(run.path, bare.path)
    bare.metrics.unlink()
    with pytest.raises(RunError, match="aelab evaluate"):
        export_hub(bare.path, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    res = CliRunner().invoke(main, ["export", str(run.path), "--format", "hub", "-o", str(hub)])
    assert res.exit_code == 2 and "--force" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = CliRunner().invoke(main, ["export", str(run.path), "--format", "hub", "-o", str(hub), "--force"])
    assert res.exit_code == 0 and aelab.load(hub).latent == 16


@pytest.mark.parametrize("metrics", [{}, {"autoencoder": {}}, {"autoencoder": {"overall": {}}, "pca": []}])
def test_metrics_without_the_test_tables_is_one_line(run: Run, tmp_path: Path, metrics: dict) -> None:
    partial = Run(tmp_path / "partial")
    shutil.copytree(run.path, partial.path)
    partial.metrics.write_text(json.dumps(metrics))
    res = CliRunner().invoke(main, ["export", str(partial.path), "--format", "hub", "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "aelab evaluate" in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_push_without_huggingface_hub_is_one_line(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if the extra were not installed
    res = CliRunner().invoke(main, ["push", str(run.path), "someone/tiny"])
    assert res.exit_code == 2 and res.stderr.strip() == ("error: aelab push needs the huggingface_hub package: "
                                                         "pip install aelab[hub]")


def test_push_offline_or_to_a_bad_id_is_one_line(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no request leaves this machine
    res = CliRunner().invoke(main, ["push", str(hub), "someone/tiny"])
    assert res.exit_code == 2 and res.stderr.startswith("error: upload to someone/tiny failed (")
    assert len(res.stderr.strip().splitlines()) == 1
    res = CliRunner().invoke(main, ["push", str(hub), "not a repo id!"])
    assert res.exit_code == 2 and "is not a repository id" in res.stderr
