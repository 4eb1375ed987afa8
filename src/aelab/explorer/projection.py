"""The explorer's 2-D map of the latent codes, and the way back from a point on the map to a latent code.

Methods (``project(codes, method)``):

- 2-D latent: the map *is* the latent space (``identity``); a point on the map is a code. Whatever method is
  asked for, a 2-D latent is drawn as it is.
- 1-D latent: x is the code, y a class row with jitter (``line``, as in the report); lifting ignores y.
- above 2-D, ``pca`` (the default): the codes on their first two principal directions (scikit-learn's PCA,
  ``random_state=0``, the same projection the report draws). A point of the map is lifted back to latent
  space through PCA's inverse: ``mean + x * pc1 + y * pc2``, i.e. the code on the principal plane.
- above 2-D, ``umap`` (when ``umap-learn`` is installed) or ``tsne`` (scikit-learn): non-linear maps, with
  no inverse; a point of the map is lifted to the inverse-distance-weighted mean of the codes of its 8
  nearest neighbours on the map, and a new code is placed at the weighted mean of the map positions of its 8
  nearest neighbours in latent space. ``auto`` picks UMAP when installed, else t-SNE.

Every map is computed once and cached in the run folder, in the file the run names for it (``cache(method)``:
``TrainedModel.run.projection``; written atomically), keyed by a SHA-256 of the codes it was computed from: a
retrained run or another data set gets a new map, never a stale one. A read-only run folder only costs the cache
(one warning).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from aelab.errors import AelabError, ConfigError
from aelab.files import atomic_write_bytes

METHODS = ("pca", "umap", "tsne", "auto")
NEIGHBOURS = 8  # for the lift and placement of non-linear maps
CACHE_VERSION = 1


def umap_available() -> bool:
    try:
        import umap  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Projection:
    """Map positions of the codes, and the lift of map points back to latent space."""

    method: str                      # "identity", "line", "pca", "umap" or "tsne"
    points: np.ndarray               # (n, 2) float32: the map positions of ``codes``
    codes: np.ndarray                # (n, latent) float32: the codes the map was made from
    mean: np.ndarray | None = None   # PCA: (latent,) mean and (2, latent) principal directions
    components: np.ndarray | None = None
    explained: list[float] = field(default_factory=list)  # PCA: share of variance of each direction
    cached: bool = False             # read back from the run folder's cache

    @property
    def latent(self) -> int:
        return int(self.codes.shape[1])

    @property
    def exact_lift(self) -> bool:
        """True when a map point names one latent code exactly (the map is the latent space itself)."""
        return self.method in ("identity", "line")

    def describe(self) -> str:
        """One sentence for the page: what the map shows and what a click on an empty spot decodes."""
        n, d = len(self.points), self.latent
        if self.method == "identity":
            return f"The 2-D codes of {n:,} test images, drawn as they are: a point of the map is a latent code."
        if self.method == "line":
            return (f"The 1-D codes of {n:,} test images (x), one jittered row per class (y): a click decodes "
                    f"the code x; y is ignored.")
        if self.method == "pca":
            share = " and ".join(f"{100 * e:.0f}%" for e in self.explained)
            return (f"The {d}-D codes of {n:,} test images on their first two principal directions ({share} of "
                    f"the variance). A click on an empty spot is lifted back to {d}-D through PCA's inverse "
                    f"(the code on the principal plane) and decoded.")
        name = {"umap": "UMAP", "tsne": "t-SNE"}[self.method]
        return (f"A {name} map of the {d}-D codes of {n:,} test images. {name} has no inverse: a click on an "
                f"empty spot decodes the distance-weighted mean of the codes of its {NEIGHBOURS} nearest points on "
                f"the map.")

    def lift(self, xy: np.ndarray) -> np.ndarray:
        """Map points (m, 2) -> latent codes (m, latent) float32."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        if self.method == "identity":
            return xy.astype(np.float32)
        if self.method == "line":
            return xy[:, :1].astype(np.float32)
        if self.method == "pca":
            assert self.mean is not None and self.components is not None
            return (self.mean + xy @ self.components).astype(np.float32)
        return _weighted_neighbours(self.points, self.codes, xy)

    def place(self, codes: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Latent codes (m, latent) -> map positions (m, 2) float32 (for an uploaded image)."""
        z = np.asarray(codes, dtype=np.float64).reshape(-1, self.latent)
        if self.method == "identity":
            return z.astype(np.float32)
        if self.method == "line":
            return np.c_[z[:, 0], np.full(len(z), -1.0)].astype(np.float32)  # below the class rows
        if self.method == "pca":
            assert self.mean is not None and self.components is not None
            return ((z - self.mean) @ self.components.T).astype(np.float32)
        return _weighted_neighbours(self.codes, self.points, z)


def _weighted_neighbours(space: np.ndarray, values: np.ndarray, queries: np.ndarray,
                         k: int = NEIGHBOURS) -> np.ndarray:
    """For each query, the inverse-distance-weighted mean of ``values`` of its ``k`` nearest rows of ``space``."""
    space64 = space.astype(np.float64)
    d2 = (queries ** 2).sum(1)[:, None] - 2.0 * queries @ space64.T + (space64 ** 2).sum(1)[None, :]
    k = min(k, len(space))
    idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
    dist = np.sqrt(np.maximum(np.take_along_axis(d2, idx, axis=1), 0.0))
    w = 1.0 / (dist + 1e-9)
    w /= w.sum(1, keepdims=True)
    return np.einsum("qk,qkd->qd", w, values[idx].astype(np.float64)).astype(np.float32)


def codes_key(codes: np.ndarray, labels: np.ndarray | None = None) -> str:
    """SHA-256 of the codes (and labels, which the 1-D map uses): the cache key of a map."""
    h = hashlib.sha256(np.ascontiguousarray(codes, dtype=np.float32).tobytes())
    if labels is not None:
        h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def resolve_method(method: str, latent: int) -> str:
    """The method actually used: ``identity``/``line`` below 3-D, ``auto`` -> ``umap`` or ``tsne``."""
    if method not in METHODS:
        raise ConfigError(f"unknown map {method!r}; use one of {', '.join(METHODS)}")
    if latent == 1:
        return "line"
    if latent == 2:
        return "identity"
    if method == "auto":
        return "umap" if umap_available() else "tsne"
    if method == "umap" and not umap_available():
        raise ConfigError("the UMAP map needs umap-learn; pip install 'aelab[umap]', or use the pca or tsne map")
    return method


def project(codes: np.ndarray, method: str = "pca", *, labels: np.ndarray | None = None,
            cache: Callable[[str], Path] | None = None, seed: int = 0, threads: int = 1) -> Projection:
    """The 2-D map of ``codes`` (n, latent) by ``method`` (see the module docstring), cached in the file
    ``cache(method)`` (the run's, ``Run.projection``; None: not cached).

    ``threads`` bounds the OpenMP/BLAS threads of scikit-learn and UMAP: with torch loaded there are two
    OpenMP runtimes in the process, and unbounded they oversubscribe the cores (t-SNE of 100 codes: 5.4 s
    unbounded, 0.6 s on one thread, measured on 2 cores).
    """
    codes = np.ascontiguousarray(codes, dtype=np.float32)
    if codes.ndim != 2 or len(codes) == 0:
        raise ValueError(f"codes must be a non-empty (n, latent) array, not {codes.shape}")
    method = resolve_method(method, codes.shape[1])
    if method == "identity":
        return Projection("identity", codes.copy(), codes)
    if method == "line":
        labels = np.zeros(len(codes), np.int64) if labels is None else np.asarray(labels)
        jitter = np.random.default_rng(seed).uniform(-0.3, 0.3, len(codes))
        return Projection("line", np.c_[codes[:, 0], labels + jitter].astype(np.float32), codes)
    key = codes_key(codes)
    path = Path(cache(method)) if cache is not None else None
    cached = _read_cache(path, key) if path is not None else None
    if cached is not None:
        return Projection(method, cached["points"], codes, cached.get("mean"), cached.get("components"),
                          [float(e) for e in cached.get("explained", [])], cached=True)
    with threadpool_limits(limits=threads):
        proj = _compute(codes, method, seed)
    if path is not None:
        _write_cache(path, key, proj)
    return proj


def _compute(codes: np.ndarray, method: str, seed: int) -> Projection:
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed).fit(codes)
        mean = pca.mean_.astype(np.float64)
        comps = pca.components_.astype(np.float64)
        points = ((codes - mean) @ comps.T).astype(np.float32)
        return Projection("pca", points, codes, mean, comps, [float(e) for e in pca.explained_variance_ratio_])
    if method == "umap":
        import umap  # type: ignore[import-not-found]

        points = umap.UMAP(n_components=2, random_state=seed).fit_transform(codes)
    else:
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(codes) - 1) / 3.5)))
        points = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(codes)
    return Projection(method, np.asarray(points, dtype=np.float32), codes)


def _read_cache(path: Path, key: str) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError):
        return None  # damaged: computed again and rewritten
    if str(data.get("key", "")) != key or int(data.get("version", -1)) != CACHE_VERSION:
        return None
    return data


def _write_cache(path: Path, key: str, proj: Projection) -> None:
    arrays: dict[str, np.ndarray] = {"key": np.array(key), "version": np.array(CACHE_VERSION),
                                     "points": proj.points}
    if proj.mean is not None and proj.components is not None:
        arrays.update(mean=proj.mean, components=proj.components, explained=np.array(proj.explained))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except (OSError, AelabError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        warnings.warn(f"could not cache the {proj.method} map in {path} ({why}); it will be computed again next "
                      f"time", stacklevel=3)
