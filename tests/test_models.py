import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from supcon_tf.models import contrastive_accuracy
from tests.reference import supcon_reference
from tests import tiny

SHAPE = (28, 28, 1)


def _images(n=32, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=n)
    base = rng.integers(0, 256, size=(4,) + SHAPE)
    noise = rng.integers(-30, 30, size=(n,) + SHAPE)
    return np.clip(base[labels] + noise, 0, 255).astype(np.float32), labels


def _model(**kwargs):
    keras.utils.set_random_seed(0)
    encoder = tiny.encoder(SHAPE)
    kwargs.setdefault("augmenter", sct.augment.supcon(SHAPE, seed=0))
    return sct.models.SupConModel(encoder, head=sct.heads.ProjectionHead(16), **kwargs)


def test_contrastive_accuracy_by_hand():
    e1, e2, e3 = np.eye(3, dtype=np.float32)
    # Sample 0's views point along e1, sample 1's along e2, sample 2's along e3,
    # except sample 2's second view, which points along e1.
    z = np.stack([[e1, e1], [e2, e2], [e3, e1 + 0.01 * e3]])
    # Self-supervised: 5 of 6 anchors find their own other view; the odd view
    # of sample 2 finds sample 0.
    assert float(contrastive_accuracy(None, z)) == pytest.approx(5 / 6)
    # Labels making samples 0 and 2 one class turn those hits into positives.
    assert float(contrastive_accuracy(np.array([0, 1, 0]), z)) == pytest.approx(6 / 6)


def test_fit_supervised_and_self_supervised_report_metrics():
    x, y = _images()
    model = _model(probe_classes=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert isinstance(model.loss, sct.losses.SupConLoss)
    logs = model.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    assert set(logs) == {"loss", "contrastive_accuracy", "output_std", "probe_loss",
                            "probe_accuracy"}
    assert all(np.isfinite(v).all() for v in logs.values())
    logs = model.fit(x, batch_size=16, epochs=1, verbose=0).history
    assert set(logs) >= {"loss", "contrastive_accuracy"}
    results = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert set(results) == {"loss", "contrastive_accuracy", "output_std", "probe_loss",
                            "probe_accuracy"}


def test_all_views_go_through_the_encoder_as_one_batch():
    seen = []

    class Recorder(keras.Model):
        def __init__(self):
            super().__init__()
            self.inner = tiny.encoder(SHAPE)

        def call(self, x, training=False):
            seen.append(tuple(x.shape))
            return self.inner(x, training=training)

    model = sct.models.SupConModel(Recorder(), augmenter=sct.augment.supcon(SHAPE), views=3)
    model.compile(optimizer="sgd")
    x, y = _images(16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert (24,) + SHAPE in seen and all(s[0] in (None, 24) for s in seen), seen


def test_evaluate_loss_is_supcon_on_the_projections():
    # Views made by the pipeline (no augmenter): evaluate is deterministic.
    x, y = _images(16)
    views = np.stack([x, x[:, :, ::-1]], axis=1)
    model = _model(augmenter=None)
    model.compile(optimizer="sgd", loss=sct.losses.SupConLoss(temperature=0.2))
    result = model.evaluate(views, y, batch_size=16, verbose=0, return_dict=True)
    projections = model(views, training=False).numpy()
    assert projections.shape == (16, 2, 16)
    expected = supcon_reference(y, projections, temperature=0.2).mean()
    assert result["loss"] == pytest.approx(expected, rel=1e-4)
    assert model(x).shape == (16, 16)


def test_probe_does_not_train_the_encoder():
    x, y = _images(16)
    plain, probed = _model(), _model(probe_classes=4)
    plain.encoder.set_weights(probed.encoder.get_weights())
    plain.head.set_weights(probed.head.get_weights())
    for model in (plain, probed):
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        keras.utils.set_random_seed(1)
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(plain.encoder.weights, probed.encoder.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, err_msg=a.path)
    assert not np.allclose(probed.probe.kernel.numpy(), _model(probe_classes=4).probe.kernel.numpy())


def test_clear_errors():
    model = _model(augmenter=None)
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="no `augmenter`"):
        model.fit(*_images(8), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="views=0"):
        _model(views=0)
    with pytest.raises(ValueError, match="probe_classes=1"):
        _model(probe_classes=1)
    with pytest.raises(ValueError, match="num_classes=1"):
        sct.models.LinearClassifier(tiny.encoder(SHAPE), 1)


def test_linear_classifier_freezes_weights_and_batchnorm_statistics(tmp_path):
    x, y = _images(64)
    encoder = tiny.encoder(SHAPE)
    before = [w.numpy().copy() for w in encoder.weights]   # includes BN moving stats
    clf = sct.models.LinearClassifier(encoder, num_classes=4,
                                      augmenter=keras.layers.RandomFlip("horizontal"))
    assert sorted(w.path for w in clf.trainable_weights) == sorted(
        [clf.classifier.kernel.path, clf.classifier.bias.path])
    clf.compile(optimizer=keras.optimizers.Adam(1e-2),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    history = clf.fit(x, y, batch_size=16, epochs=5, verbose=0).history
    for w, b in zip(encoder.weights, before):
        np.testing.assert_array_equal(w.numpy(), b, err_msg=w.path)
    assert history["loss"][-1] < history["loss"][0]
    path = str(tmp_path / "linear.keras")
    clf.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), clf.predict(x, verbose=0), atol=1e-5)


def test_cross_entropy_baseline_trains_the_encoder():
    x, y = _images(32)
    encoder = tiny.encoder(SHAPE)
    before = encoder.layers[2].kernel.numpy().copy()
    model = sct.models.CrossEntropyClassifier(encoder, 4)
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert not np.allclose(encoder.layers[2].kernel.numpy(), before)
    assert model.predict(x[:3], verbose=0).shape == (3, 4)


def test_views_from_the_input_pipeline():
    x, y = _images(32)
    multi = sct.augment.MultiView(sct.augment.supcon(SHAPE, seed=0), views=2)
    ds = (tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
          .map(lambda images, labels: (multi(images), labels),
               num_parallel_calls=tf.data.AUTOTUNE))
    model = _model(augmenter=None)
    model.compile(optimizer="adam")
    history = model.fit(ds, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()


def test_supcon_model_file_of_v0_1_0_loads():
    """A .keras file saved by the SupConModel of v0.1.0 (before the models
    package) loads, predicts as it did, and trains on."""
    fixtures = __import__("pathlib").Path(__file__).parent / "fixtures"
    loaded = keras.models.load_model(str(fixtures / "supcon_model_v0_1_0.keras"))
    want = np.load(fixtures / "supcon_model_v0_1_0.npz")
    assert isinstance(loaded, sct.models.SupConModel)
    assert isinstance(loaded, sct.models.ContrastiveModel)
    np.testing.assert_allclose(loaded(want["x"]), want["projections"], atol=1e-5)
    np.testing.assert_array_equal(loaded.probe.kernel.numpy(), want["probe_kernel"])
    assert loaded.loss.get_config()["temperature"] == 0.3
    x, y = _images(16)
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0)


def test_input_rank_may_change_between_fits():
    x, y = _images(16)
    model = _model()
    model.compile(optimizer="sgd")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    views = np.stack([x, x[:, :, ::-1]], axis=1)
    history = model.fit(views, y, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert np.isfinite(model.evaluate(x, y, batch_size=8, verbose=0)).all()


def test_probe_logs_only_with_labels():
    x, _ = _images(16)
    model = _model(probe_classes=4)
    model.compile(optimizer="sgd")
    logs = model.fit(x, batch_size=8, epochs=1, verbose=0).history
    assert set(logs) == {"loss", "contrastive_accuracy", "output_std"}
    results = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    assert set(results) == {"loss", "contrastive_accuracy", "output_std"}
