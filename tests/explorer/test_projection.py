"""The explorer's 2-D map: PCA and its inverse, the non-linear maps' lift, and the cache in the run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA

from aelab.errors import ConfigError
from aelab.explorer.projection import project, umap_available
from aelab.runs import Run


@pytest.fixture
def codes() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(300, 8)) * np.linspace(3, 0.2, 8)).astype(np.float32)


def test_pca_map_and_its_inverse(codes: np.ndarray, tmp_path: Path) -> None:
    proj = project(codes, "pca", cache=Run(tmp_path).projection)
    pca = PCA(n_components=2, random_state=0).fit(codes)
    assert proj.method == "pca" and not proj.cached and not proj.exact_lift
    assert np.abs(proj.points - pca.transform(codes)).max() < 1e-4
    assert np.abs(proj.lift(proj.points[:5]) - pca.inverse_transform(pca.transform(codes[:5]))).max() < 1e-4
    assert np.abs(proj.place(codes[:5]) - proj.points[:5]).max() < 1e-4
    assert sum(proj.explained) > 0.5 and "PCA's inverse" in proj.describe()


def test_the_map_is_cached_atomically_and_recomputed_when_stale(codes: np.ndarray, tmp_path: Path) -> None:
    first = project(codes, "pca", cache=Run(tmp_path).projection)
    run = Run(tmp_path)
    assert list(run.explorer.iterdir()) == [run.projection("pca")]  # the run's own file; no temporary file left
    again = project(codes, "pca", cache=Run(tmp_path).projection)
    assert again.cached and np.array_equal(again.points, first.points)
    assert np.allclose(again.lift(again.points[:3]), first.lift(first.points[:3]))
    other = project(codes * 2, "pca", cache=Run(tmp_path).projection)      # another model's codes: not the stale map
    assert not other.cached and np.abs(other.points).max() > 1.5 * np.abs(first.points).max()
    run.projection("pca").write_bytes(b"damaged")
    assert not project(codes, "pca", cache=Run(tmp_path).projection).cached
    assert project(codes, "pca", cache=Run(tmp_path).projection).cached    # rewritten


def test_an_unwritable_cache_costs_only_a_warning(codes: np.ndarray, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="could not cache"):
        proj = project(codes, "pca", cache=Run(blocker).projection)
    assert proj.points.shape == (300, 2)


def test_tsne_map_lifts_through_its_neighbours(codes: np.ndarray, tmp_path: Path) -> None:
    codes = codes[:100]  # t-SNE is slow: ~0.3 s for 100 codes, 111 s for 10,000 (once, then cached)
    proj = project(codes, "tsne", cache=Run(tmp_path).projection)
    assert proj.method == "tsne" and Run(tmp_path).projection("tsne").is_file()
    assert np.abs(proj.lift(proj.points[7:8]) - codes[7]).max() < 1e-3   # on a point: its own code
    mid = proj.lift((proj.points[7:8] + proj.points[8:9]) / 2)
    assert mid.shape == (1, 8) and np.isfinite(mid).all()
    assert np.abs(proj.place(codes[7:8]) - proj.points[7]).max() < 1e-3
    assert "no inverse" in proj.describe()
    assert project(codes, "tsne", cache=Run(tmp_path).projection).cached


def test_low_dimensional_latents_are_drawn_as_they_are() -> None:
    z2 = np.random.default_rng(1).normal(size=(50, 2)).astype(np.float32)
    proj = project(z2, "tsne")
    assert proj.method == "identity" and np.array_equal(proj.points, z2) and proj.exact_lift
    assert np.array_equal(proj.lift(np.array([[0.5, -1.0]])), [[0.5, -1.0]])
    labels = np.arange(50) % 10
    line = project(z2[:, :1], "pca", labels=labels)
    assert line.method == "line" and np.abs(line.points[:, 1] - labels).max() <= 0.3
    assert np.array_equal(line.lift(np.array([[0.25, 7.0]])), [[0.25]])


def test_unknown_or_missing_methods_are_config_errors(codes: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="unknown map"):
        project(codes, "isomap")
    if not umap_available():
        with pytest.raises(ConfigError, match="umap-learn"):
            project(codes, "umap")
        assert project(codes[:40], "auto").method == "tsne"
