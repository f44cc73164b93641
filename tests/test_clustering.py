"""k-means and clustering scores against scikit-learn."""

import numpy as np
import pytest

# scikit-learn is in the test extra (setup.cfg): the reference these compare with.
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from supcon_tf import clustering, evaluation


def _blobs(seed=0, k=5, per=200, dim=8):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * 10
    x = np.concatenate([c + rng.normal(size=(per, dim)) for c in centers]).astype("float32")
    return x, np.repeat(np.arange(k), per)


def test_kmeans_finds_separable_blobs_as_sklearn_does():
    x, y = _blobs()
    centroids, labels, inertia = clustering.kmeans(x, 5, seed=1)
    reference = KMeans(5, n_init=3, random_state=0).fit(x)
    assert adjusted_rand_score(reference.labels_, labels) == 1.0    # the same partition
    assert adjusted_rand_score(y, labels) == 1.0
    assert inertia == pytest.approx(reference.inertia_, rel=1e-4)
    assert centroids.shape == (5, 8)
    # Deterministic per seed.
    again = clustering.kmeans(x, 5, seed=1)
    np.testing.assert_array_equal(again[1], labels)


def test_kmeans_inertia_on_random_data_is_within_a_few_percent_of_sklearn():
    x = np.random.default_rng(3).normal(size=(2000, 16)).astype("float32")
    _, labels, inertia = clustering.kmeans(x, 20, restarts=3)
    reference = KMeans(20, n_init=3, random_state=0).fit(x)
    assert inertia == pytest.approx(reference.inertia_, rel=0.03)
    # The inertia is that of the returned assignment to its cluster means.
    means = np.stack([x[labels == c].mean(0) for c in range(20)])
    assert inertia == pytest.approx(((x - means[labels]) ** 2).sum(), rel=1e-3)


def test_spherical_kmeans_clusters_directions():
    rng = np.random.default_rng(4)
    directions = np.eye(4, dtype="float32")
    # Same directions at very different lengths: cosine groups them, Euclidean would not.
    x = np.concatenate([d * rng.uniform(0.1, 10, size=(50, 1)) + 0.01 * rng.normal(size=(50, 4))
                        for d in directions]).astype("float32")
    y = np.repeat(np.arange(4), 50)
    centroids, labels, _ = clustering.kmeans(x, 4, metric="cosine")
    assert adjusted_rand_score(y, labels) == 1.0
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-5)


def test_scores_match_sklearn_and_the_hungarian_matching():
    rng = np.random.default_rng(5)
    labels, assignments = rng.integers(0, 7, 500), rng.integers(0, 5, 500)
    assert clustering.nmi(labels, assignments) == pytest.approx(
        normalized_mutual_info_score(labels, assignments), abs=1e-12)
    assert clustering.ari(labels, assignments) == pytest.approx(
        adjusted_rand_score(labels, assignments), abs=1e-12)
    # Accuracy: clusters renamed are still perfect; a hand case with one swap.
    assert clustering.clustering_accuracy([0, 0, 1, 1, 2], [2, 2, 0, 0, 1]) == 1.0
    assert clustering.clustering_accuracy([0, 0, 1, 1], [0, 1, 1, 1]) == 0.75
    assert clustering.nmi([1, 1, 1], [0, 0, 0]) == 1.0
    x, y = _blobs(seed=6, k=3, per=50)
    scores = evaluation.cluster_scores(x, y, k=3, metric="euclidean")
    assert scores["accuracy"] == 1.0 and scores["nmi"] == pytest.approx(1.0)
    assert scores["ari"] == pytest.approx(1.0)


def test_bad_input():
    x, y = _blobs(k=2, per=3)
    with pytest.raises(ValueError, match="k.*Received: k=7"):
        clustering.kmeans(x, 7)
    with pytest.raises(ValueError, match="metric"):
        clustering.kmeans(x, 2, metric="manhattan")
    with pytest.raises(ValueError, match="restarts=0"):
        clustering.kmeans(x, 2, restarts=0)
    with pytest.raises(ValueError, match="NaN"):
        clustering.kmeans(np.full((4, 2), np.nan), 2)
    with pytest.raises(ValueError, match="one label per embedding"):
        evaluation.cluster_scores(x, y[:-1], k=2)
    with pytest.raises(ValueError, match="same length"):
        clustering.nmi([0, 1], [0])
