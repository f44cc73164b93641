"""k-means and clustering scores against scikit-learn."""

import numpy as np
import pytest
import tensorflow as tf

# scikit-learn is in the test extra (setup.cfg): the reference these compare with.
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from supcon_tf import clustering, evaluation
from tests.reference import sinkhorn_reference


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


def _phi_reference(x, assignments, centroids, temperature, alpha=10.0):
    """salesforce/PCL's run_kmeans concentration, transcribed (distances are
    faiss's squared L2, square-rooted there)."""
    k = len(centroids)
    dcluster = [[] for _ in range(k)]
    for im, i in enumerate(assignments):
        dcluster[i].append(np.sum((x[im] - centroids[i]) ** 2))
    density = np.zeros(k)
    for i, dist in enumerate(dcluster):
        if len(dist) > 1:
            density[i] = (np.asarray(dist) ** 0.5).mean() / np.log(len(dist) + alpha)
    dmax = density.max()
    for i, dist in enumerate(dcluster):
        if len(dist) <= 1:
            density[i] = dmax
    density = density.clip(np.percentile(density, 10), np.percentile(density, 90))
    return temperature * density / density.mean()


def test_concentration_matches_pcl():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centroids, assignments, _ = clustering.kmeans(x.astype("float32"), 12, seed=0)
    assignments = assignments.copy()
    assignments[0] = 11          # make sure of a singleton and an empty cluster
    assignments[assignments == 11] = 10
    assignments[0] = 11
    phi = clustering.concentration(x, assignments, centroids, temperature=0.2)
    expected = _phi_reference(x, assignments, np.asarray(centroids, np.float64), 0.2)
    np.testing.assert_allclose(phi, expected, rtol=1e-5)
    assert phi.mean() == pytest.approx(0.2, rel=1e-5)
    with pytest.raises(ValueError, match="assignments"):
        clustering.concentration(x, assignments + 1, centroids)
    with pytest.raises(ValueError, match="temperature"):
        clustering.concentration(x, assignments, centroids, temperature=0)


def test_sinkhorn_matches_swav_and_sums_as_specified():
    rng = np.random.default_rng(6)
    scores = rng.uniform(-1, 1, size=(32, 5)).astype("float32")
    codes = clustering.sinkhorn(tf.constant(scores)).numpy()
    np.testing.assert_allclose(codes, sinkhorn_reference(scores.astype(np.float64)),
                               rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(codes.sum(axis=1), 1.0, rtol=1e-5)       # each sample
    # Each prototype's share converges to B / K with the iterations (3 leave it rough).
    many = clustering.sinkhorn(tf.constant(scores), iterations=50).numpy()
    np.testing.assert_allclose(many.sum(axis=0), 32 / 5, rtol=1e-4)
    with pytest.raises(ValueError, match="iterations"):
        clustering.sinkhorn(scores, iterations=0)
    with pytest.raises(ValueError, match="epsilon"):
        clustering.sinkhorn(scores, epsilon=0)


def test_sinkhorn_two_replicas_equal_one_device(strategy):
    scores = np.random.default_rng(7).uniform(-1, 1, size=(16, 4)).astype("float32")
    one = clustering.sinkhorn(tf.constant(scores)).numpy()
    ds = tf.data.Dataset.from_tensor_slices(scores).batch(16)
    batch = next(iter(strategy.experimental_distribute_dataset(ds)))
    per_replica = strategy.run(tf.function(clustering.sinkhorn), args=(batch,))
    two = np.concatenate([v.numpy() for v in strategy.experimental_local_results(per_replica)])
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-7)
