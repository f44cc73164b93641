"""SpCL: the hybrid memory's loss and update against the official code's
definitions, the k-reciprocal Jaccard distance, DBSCAN and the self-paced
labels against loop translations of the official code, and the model with
labelled and unlabelled samples. (The family's contract test covers fit,
save/load, resume and two replicas without labels.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from supcon_tf import self_paced
from tests import reference

RNG = np.random.default_rng(3)


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype("float32")


def _blobs(n_per, centers, dim, spread, seed):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, dim))
    return _unit(np.concatenate([c[i] + spread * rng.normal(size=(n_per, dim))
                                 for i in range(centers)]))


def test_loss_matches_the_official_definition_and_its_gradient():
    memory = _unit(RNG.normal(size=(9, 6)))
    # Two classes, a cluster of three, an outlier, a slot that takes no part,
    # and a label (5) no slot holds.
    labels = np.array([0, 1, 2, 2, 2, 6, -1, 7, 8])
    f = RNG.normal(size=(5, 6)).astype("float32")
    y = np.array([0, 1, 2, 6, 8])
    got = sct.losses.hybrid_memory_loss(y, f, memory, labels, temperature=0.1)
    np.testing.assert_allclose(got, reference.hybrid_memory_reference(y, f, memory, labels, 0.1),
                               rtol=1e-5, atol=1e-5)
    # Gradient by central differences of the float64 reference.
    x = tf.constant(f)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(sct.losses.hybrid_memory_loss(y, x, memory, labels, 0.1))
    grad = tape.gradient(total, x).numpy()
    numeric = np.zeros_like(f, dtype=np.float64)
    for idx in np.ndindex(*f.shape):
        up, down = f.astype(np.float64), f.astype(np.float64)
        up[idx] += 1e-5
        down[idx] -= 1e-5
        numeric[idx] = (reference.hybrid_memory_reference(y, up, memory, labels, 0.1).sum()
                        - reference.hybrid_memory_reference(y, down, memory, labels, 0.1).sum()
                        ) / 2e-5
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-3)


def test_loss_refuses_labels_no_slot_holds_and_bad_shapes():
    memory = _unit(RNG.normal(size=(4, 3)))
    f = RNG.normal(size=(2, 3)).astype("float32")
    with pytest.raises(ValueError, match="y_true"):
        sct.losses.hybrid_memory_loss(np.array([0, 3]), f, memory, np.array([0, 1, 2, -1]))
    with pytest.raises(ValueError, match="memory_labels"):
        sct.losses.hybrid_memory_loss(np.array([0, 1]), f, memory, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="memory"):
        sct.losses.hybrid_memory_loss(np.array([0, 1]), f, memory[:, :2], np.arange(4))
    with pytest.raises(ValueError, match="temperature"):
        sct.losses.HybridMemoryLoss(temperature=0)
    with pytest.raises(ValueError, match="memory_labels"):
        sct.losses.HybridMemoryLoss()(np.array([0, 1]), f)


def test_memory_update_is_the_official_sequential_loop():
    memory = sct.memory.HybridMemory(3, 5, 4, momentum=0.2, seed=0)
    before = memory.values.numpy()
    # Class 1 three times, class 0 twice, two samples' own slots.
    slots = np.array([4, 1, 0, 1, 6, 1, 0])
    features = RNG.normal(size=(7, 4)).astype("float32")
    memory.update(slots, features)
    np.testing.assert_allclose(
        memory.values.numpy(),
        reference.hybrid_memory_update_reference(before, slots, features, 0.2), atol=1e-6)


def test_memory_slots_and_checks():
    memory = sct.memory.HybridMemory(3, 5, 4)
    np.testing.assert_array_equal(memory.slots([0, 1, 4], [2, -1, 0]).numpy(), [2, 4, 0])
    np.testing.assert_array_equal(memory.slots([0, 4]).numpy(), [3, 7])
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_samples"):
        memory.slots([5])
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        memory.slots([0], [3])
    with pytest.raises(ValueError, match="momentum"):
        sct.memory.HybridMemory(3, 5, 4, momentum=1.0)
    with pytest.raises(ValueError, match="labels"):
        memory.assign_labels(np.zeros(3))


@pytest.mark.parametrize("k1,k2", [(8, 3), (6, 1)])
def test_jaccard_distance_equals_the_official_computation(k1, k2):
    x = _blobs(15, 4, 5, 0.6, seed=k1)
    got = self_paced.jaccard_distance(x, k1=k1, k2=k2, block=7)
    dense = np.ones(got.shape)
    coo = got.tocoo()
    dense[coo.row, coo.col] = coo.data
    want = reference.jaccard_reference(x, k1=k1, k2=k2)
    np.testing.assert_allclose(dense, want, atol=1e-5)
    assert np.all(got.diagonal() < 1e-6) and got.nnz < x.shape[0] ** 2


def test_dbscan_equals_the_classic_scan():
    x = _blobs(20, 3, 4, 0.5, seed=1)
    d = self_paced.jaccard_distance(x, k1=8, k2=3)
    dense = np.ones(d.shape)
    coo = d.tocoo()
    dense[coo.row, coo.col] = coo.data
    for eps in (0.3, 0.5, 0.7):
        got = self_paced.dbscan(d, eps=eps, min_samples=4)
        want, core = reference.dbscan_reference(dense, eps, 4)
        np.testing.assert_array_equal(got, want)
        assert 0 < core.sum() < len(core)
    with pytest.raises(ValueError, match="distance"):
        self_paced.dbscan(dense)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_self_paced_labels_equal_the_official_code(seed):
    noise = np.random.default_rng(seed).normal(size=(6, 4))
    x = np.concatenate([_blobs(12, 3, 4, 0.5, seed=seed), _unit(noise)])
    d = self_paced.jaccard_distance(x, k1=8, k2=3)
    dense = np.ones(d.shape)
    coo = d.tocoo()
    dense[coo.row, coo.col] = coo.data
    for eps, gap in ((0.5, 0.05), (0.6, 0.1)):
        got, threshold, stats = self_paced.self_paced_labels(d, eps=eps, eps_gap=gap)
        want, want_threshold = reference.self_paced_reference(dense, eps=eps, eps_gap=gap)
        assert threshold == pytest.approx(want_threshold)
        # The same partition (ids renumbered from 0 here).
        assert np.array_equal(got[:, None] == got[None, :], want[:, None] == want[None, :])
        assert sorted(set(got.tolist())) == list(range(got.max() + 1))
        counts = np.bincount(got)
        assert stats == {"clusters": int((counts > 1).sum()), "outliers": int((counts == 1).sum())}
        # A given threshold is kept.
        _, kept, _ = self_paced.self_paced_labels(d, eps=eps, eps_gap=gap,
                                                  independence_threshold=0.0)
        assert kept == 0.0
    with pytest.raises(ValueError, match="eps_gap"):
        self_paced.self_paced_labels(d, eps=0.1, eps_gap=0.2)


def _tiny_encoder():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Rescaling(1 / 255),
                             keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
                             keras.layers.Flatten(), keras.layers.Dense(8)])


def test_model_with_labelled_and_unlabelled_samples(tmp_path):
    n = 48
    images, labels = next(iter(sct.data.load("fashion_mnist", f"train[:{n}]").batch(n)))
    images, labels = images.numpy(), labels.numpy().astype("int64")
    y = labels.copy()
    y[n // 2:] = -1                                  # the second half unlabelled
    model = sct.models.SpCLModel(_tiny_encoder(), n, num_classes=10, probe_classes=10,
                                 augmenter=sct.augment.simclr((28, 28, 1), seed=0))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    clustering = sct.models.SpCLClustering(images, y, k1=6, k2=2, eps=0.5, eps_gap=0.1)
    ds = sct.data.with_index(tf.data.Dataset.from_tensor_slices((images, y))).batch(16)
    model.build((None, 28, 28, 1))
    embeddings = model.embed(images)
    history = model.fit(ds, epochs=2, verbose=0, callbacks=[clustering]).history
    assert np.all(np.isfinite(history["loss"])) and "clusters" in history
    slot_labels = model.memory.labels.numpy()
    np.testing.assert_array_equal(slot_labels[:10], np.arange(10))
    assert np.all(slot_labels[10:10 + n // 2] == -1)           # labelled samples' slots
    assert np.all(slot_labels[10 + n // 2:] >= 10)             # clusters and outliers
    # The start: class centroids are the normalised means of the labelled
    # embeddings (a fresh model, the same encoder weights).
    fresh = sct.models.SpCLModel(_tiny_encoder(), n, num_classes=10)
    fresh.build((None, 28, 28, 1))
    fresh.initialize_memory(embeddings, y)
    for c in set(y[y >= 0].tolist()):
        mean = embeddings[y == c].mean(axis=0)
        np.testing.assert_allclose(fresh.memory.values.numpy()[c], mean / np.linalg.norm(mean),
                                   atol=1e-6)
    # The threshold set by the first clustering is kept, also through a file.
    threshold = float(model.independence_threshold.numpy())
    path = str(tmp_path / "spcl.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert float(loaded.independence_threshold.numpy()) == threshold
    np.testing.assert_array_equal(loaded.memory.labels.numpy(), slot_labels)
    with pytest.raises(ValueError, match="labels"):
        fresh.initialize_memory(embeddings, np.full(n, 10))


def test_fit_without_the_callback_warns_and_bad_arguments_are_named():
    n = 16
    images, _ = next(iter(sct.data.load("fashion_mnist", f"train[:{n}]").batch(n)))
    model = sct.models.SpCLModel(_tiny_encoder(), n)
    model.compile(optimizer="adam")
    ds = sct.data.with_index(tf.data.Dataset.from_tensor_slices(images.numpy())).batch(8)
    with pytest.warns(UserWarning, match="SpCLClustering"):
        model.fit(ds, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="HybridMemoryLoss"):
        model.compile(optimizer="adam", loss=sct.losses.SupConLoss())
    with pytest.raises(ValueError, match="memory_momentum"):
        sct.models.SpCLModel(_tiny_encoder(), n, memory_momentum=1.5)
    with pytest.raises(ValueError, match="eps_gap"):
        sct.models.SpCLClustering(images, eps=0.1, eps_gap=0.1)
