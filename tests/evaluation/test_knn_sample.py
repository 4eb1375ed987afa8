"""kNN-5's training sample: fixed by the seed, the same for the autoencoder and PCA, all images when few."""

from __future__ import annotations

import numpy as np

from aelab.evaluation.evaluate import KNN_TRAIN_SAMPLE, knn_train_indices


def test_the_knn_sample_is_fixed_sorted_and_bounded() -> None:
    a, b = knn_train_indices(54_000, seed=0), knn_train_indices(54_000, seed=0)
    assert np.array_equal(a, b) and len(a) == KNN_TRAIN_SAMPLE == 10_000
    assert np.all(np.diff(a) > 0) and a[0] >= 0 and a[-1] < 54_000
    assert not np.array_equal(a, knn_train_indices(54_000, seed=1))
    assert np.array_equal(knn_train_indices(3_000, seed=0), np.arange(3_000))  # fewer: every image
