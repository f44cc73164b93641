"""PCLModel: ProtoNCE on MoCo, the clustering callback, state and bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from supcon_tf.losses import proto_nce
from tests import tiny


def _data(n=48):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 8, 8, 1)).astype("uint8"), np.arange(n) % 4


def _model(n=48, **kwargs):
    keras.utils.set_random_seed(0)
    enc = tiny.encoder((8, 8, 1))
    return sct.models.PCLModel(enc, n, **{**dict(
        num_clusters=(3, 6), warmup_epochs=1, num_prototype_negatives=4,
        head=sct.heads.ProjectionHead(8), queue_size=32,
        augmenter=sct.augment.simclr((8, 8, 1), seed=0)), **kwargs})


def test_pcl_warms_up_then_clusters_every_epoch_and_keeps_its_state(tmp_path):
    images, labels = _data()
    ds = sct.data.batches(sct.data.with_index(
        tf.data.Dataset.from_tensor_slices((images, labels))), 16, training=True, seed=0)
    model = _model()
    model.compile(optimizer="adam")
    clustering = sct.models.PCLClustering(images)
    history = model.fit(ds, epochs=3, verbose=0, callbacks=[clustering]).history
    assert history["proto_loss"][0] == 0.0 and min(history["proto_loss"][1:]) > 0
    assert sorted(clustering.seconds) == [1, 2]          # after the warm-up, every epoch
    assert history["clustering_seconds"] == [0.0] + [clustering.seconds[e] for e in (1, 2)]
    assert min(clustering.seconds.values()) > 0
    for k, c, phi, ids in zip((3, 6), model.prototypes, model.phi, model.cluster_ids):
        np.testing.assert_allclose(np.linalg.norm(c.numpy(), axis=1), 1.0, rtol=1e-5)
        assert phi.numpy().mean() == pytest.approx(model.temperature, rel=1e-5)
        assert ids.numpy().max() < k and len(np.unique(ids.numpy())) > 1
    path = str(tmp_path / "pcl.keras")
    model.save(path)
    again = keras.models.load_model(path)
    assert again.num_clusters == (3, 6) and float(again.clustered.numpy()) == 1.0
    for a, b in zip(again.prototypes + again.phi + again.cluster_ids,
                    model.prototypes + model.phi + model.cluster_ids):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_pcl_loss_is_info_nce_plus_the_mean_proto_term():
    images, _ = _data()
    model = _model()
    model.compile(optimizer="adam")
    rng = np.random.default_rng(1)
    model.set_clusters(rng.normal(size=(48, 8)).astype("float32"))
    views = tf.constant(rng.uniform(0, 255, size=(8, 2, 8, 8, 1)).astype("float32"))
    x = {"image": views, "index": tf.range(8, 16)}
    out = model.forward(views, training=False)
    with_proto = float(model.contrastive_loss(x, None, out, None, False))
    model.clustered.assign(0.0)
    info_nce = float(model.contrastive_loss(x, None, out, None, False))
    queries = out["projections"][:, 0]
    step = int(model.optimizer.iterations.numpy())
    expected = np.mean([float(tf.reduce_mean(proto_nce(
        queries, c, phi, tf.gather(ids, tf.range(8, 16)), num_negatives=4,
        seed=(step, m)))) for m, (c, phi, ids) in enumerate(
            zip(model.prototypes, model.phi, model.cluster_ids))])
    assert with_proto - info_nce == pytest.approx(expected, rel=1e-5)
    # Sample weights weight both parts, per query (Keras's sum over batch size).
    w = np.array([0, 1, 2, 1, 0.5, 1, 3, 1], "float32")
    model.clustered.assign(1.0)
    weighted = float(model.contrastive_loss(x, None, out, tf.constant(w), False))
    model.clustered.assign(0.0)
    weighted_nce = float(model.contrastive_loss(x, None, out, tf.constant(w), False))
    expected = np.mean([float(tf.reduce_mean(w * proto_nce(
        queries, c, phi, tf.gather(ids, tf.range(8, 16)), num_negatives=4,
        seed=(step, m)))) for m, (c, phi, ids) in enumerate(
            zip(model.prototypes, model.phi, model.cluster_ids))])
    assert weighted - weighted_nce == pytest.approx(expected, rel=1e-5)


def test_pcl_bad_input():
    for clusters, match in [((), "non-empty"), ((6, 3), "increasing"), ((3, 3), "increasing"),
                            ((3, 60), "60 clusters of num_samples=48")]:
        with pytest.raises(ValueError, match=match):
            _model(num_clusters=clusters)
    model = _model()
    with pytest.raises(ValueError, match="got 10 embeddings"):
        model.set_clusters(np.zeros((10, 8), "float32"))
    images, labels = _data()
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="with_index"):
        model.fit(tf.data.Dataset.from_tensor_slices((images, labels)).batch(16), epochs=1,
                  verbose=0)
