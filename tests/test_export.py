"""SavedModel export: signatures, plain-TensorFlow and TFSMLayer loading,
values equal to the in-memory model, atomic writes; `.keras` with safe_mode."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import supcon_tf as sct
from tests import tiny

SHAPE = (12, 12, 1)


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    encoder = tiny.encoder(SHAPE)
    model = sct.models.SupConModel(encoder, head=sct.heads.ProjectionHead(16),
                                   augmenter=sct.augment.supcon(SHAPE, seed=0),
                                   probe_classes=3)
    model.compile(optimizer="adam")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(32, *SHAPE)).astype("float32")
    y = rng.integers(0, 3, size=32).astype("int32")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # moves BN statistics too
    return model, x, y


def expected(model, images):
    features = model.encoder(images.astype("float32"), training=False)
    return {"embedding": tf.math.l2_normalize(features, axis=-1).numpy(),
            "projection": model.head(features, training=False).numpy()}


def test_export_round_trip_values_and_signatures(trained, tmp_path):
    model, x, _ = trained
    path = sct.export.export_encoder(model.encoder, tmp_path / "sm", head=model.head)
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serving_default", "serving_uint8"}
    want = expected(model, x[:5])
    for name, images in (("serving_default", x[:5]),
                         ("serving_uint8", x[:5].astype("uint8"))):
        out = loaded.signatures[name](images=tf.constant(images))
        assert sorted(out) == ["embedding", "projection"]
        for key in want:
            np.testing.assert_allclose(out[key].numpy(), want[key], atol=1e-5)
    # The object itself is callable with either dtype.
    np.testing.assert_allclose(loaded(x[:5].astype("uint8"))["embedding"].numpy(),
                               want["embedding"], atol=1e-5)
    assert np.allclose(np.linalg.norm(want["embedding"], axis=1), 1, atol=1e-5)


def test_export_without_head_has_only_embedding(trained, tmp_path):
    model, x, _ = trained
    path = sct.export.export_encoder(model.encoder, tmp_path / "sm")
    out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(x[:2]))
    assert list(out) == ["embedding"]


def test_export_serves_the_feature_map_for_dense_tasks(trained, tmp_path):
    """`feature_map=True` adds the encoder's last map (before its pooling),
    equal to `dense.feature_map`'s, the other outputs unchanged."""
    model, x, _ = trained
    path = sct.export.export_encoder(model.encoder, tmp_path / "sm", head=model.head,
                                     feature_map=True)
    out = tf.saved_model.load(path).signatures["serving_uint8"](
        images=tf.constant(x[:3].astype("uint8")))
    assert sorted(out) == ["embedding", "feature_map", "projection"]
    want = sct.dense.feature_map(model.encoder)(x[:3], training=False).numpy()
    assert out["feature_map"].shape == want.shape and want.ndim == 4
    np.testing.assert_allclose(out["feature_map"].numpy(), want, atol=1e-5)
    np.testing.assert_allclose(out["embedding"].numpy(), expected(model, x[:3])["embedding"],
                               atol=1e-5)
    with pytest.raises(TypeError, match="feature_map"):
        sct.export.export_encoder(model.encoder, tmp_path / "bad", feature_map="yes")
    flat = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="pooling"):
        sct.export.export_encoder(flat, tmp_path / "flat", feature_map=True)
    assert not os.path.exists(tmp_path / "bad") and not os.path.exists(tmp_path / "flat")


def test_encoder_of_any_image_size_exports_at_the_given_shape(trained, tmp_path):
    """Multi-crop SwAV trains an encoder on `(None, None, C)`: the SavedModel
    serves the shape given; without one, or with one that disagrees, clear errors."""
    model, x, _ = trained
    any_size = tiny.encoder((None, None, 1))
    any_size.set_weights(model.encoder.get_weights())
    with pytest.raises(ValueError, match="image_shape"):
        sct.export.export_encoder(any_size, tmp_path / "none")
    for bad, error in (((12, 12), ValueError), ((12, 0, 1), ValueError),
                       ("12x12", TypeError)):
        with pytest.raises(error, match="image_shape"):
            sct.export.export_encoder(any_size, tmp_path / "bad", image_shape=bad)
    with pytest.raises(ValueError, match="agree"):
        sct.export.export_encoder(model.encoder, tmp_path / "bad", image_shape=(16, 16, 1))
    assert not any(tmp_path.iterdir())              # nothing written by the failures
    path = sct.export.export_encoder(any_size, tmp_path / "sm", image_shape=SHAPE)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    assert serve.structured_input_signature[1]["images"].shape.as_list() == [None, *SHAPE]
    np.testing.assert_allclose(serve(images=tf.constant(x[:3]))["embedding"].numpy(),
                               expected(model, x[:3])["embedding"], atol=1e-5)


def test_plain_tensorflow_without_supcon_tf(trained, tmp_path):
    model, x, _ = trained
    path = sct.export.export_encoder(model.encoder, tmp_path / "sm", head=model.head)
    np.save(tmp_path / "x.npy", x[:3])
    np.save(tmp_path / "want.npy", expected(model, x[:3])["embedding"])
    script = f"""
import sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load({str(path)!r})
x = np.load({str(tmp_path / "x.npy")!r})
got = loaded.signatures["serving_default"](images=tf.constant(x))["embedding"].numpy()
assert np.abs(got - np.load({str(tmp_path / "want.npy")!r})).max() < 1e-5
assert not any(m.startswith("supcon_tf") for m in sys.modules), "supcon_tf was imported"
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_tfsm_layer(trained, tmp_path):
    model, x, _ = trained
    path = sct.export.export_encoder(model.encoder, tmp_path / "sm", head=model.head)
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    out = layer(x[:4])
    want = expected(model, x[:4])
    np.testing.assert_allclose(out["embedding"].numpy(), want["embedding"], atol=1e-5)
    np.testing.assert_allclose(out["projection"].numpy(), want["projection"], atol=1e-5)
    # ... and inside a Keras model.
    inputs = keras.Input(SHAPE)
    wrapped = keras.Model(inputs, layer(inputs)["embedding"])
    np.testing.assert_allclose(wrapped.predict(x[:4], verbose=0), want["embedding"],
                               atol=1e-5)


def test_refuses_to_overwrite_and_replaces_when_asked(trained, tmp_path):
    model, x, _ = trained
    path = tmp_path / "sm"
    sct.export.export_encoder(model.encoder, path)
    marker = path / "marker"
    marker.write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        sct.export.export_encoder(model.encoder, path)
    assert marker.exists()
    sct.export.export_encoder(model.encoder, path, head=model.head, overwrite=True)
    assert not marker.exists()
    out = tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.constant(x[:1]))
    assert "projection" in out
    assert sorted(os.listdir(tmp_path)) == ["sm"]  # no temporary folders left


class _GraphOnly(keras.layers.Layer):
    """Behaves differently once traced: the export's verification must catch it."""

    def call(self, x):
        return x if tf.executing_eagerly() else x + tf.range(1.0, 2.0)


def test_failed_export_leaves_nothing(tmp_path):
    inputs = keras.Input(SHAPE)
    features = keras.layers.Flatten()(inputs)
    encoder = keras.Model(inputs, _GraphOnly()(features))
    with pytest.raises(RuntimeError, match="differs from the in-memory model"):
        sct.export.export_encoder(encoder, tmp_path / "sm")
    assert os.listdir(tmp_path) == []


def test_export_errors(trained, tmp_path):
    model, _, _ = trained
    with pytest.raises(TypeError, match="path"):
        sct.export.export_encoder(model.encoder, None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        sct.export.export_encoder(model.encoder, tmp_path / "file", overwrite=True)
    with pytest.raises(ValueError):
        sct.export.export_encoder(keras.Sequential([keras.layers.Dense(3)]), tmp_path / "x")


def test_keras_files_load_with_safe_mode(trained, tmp_path):
    model, x, y = trained
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, sct.models.SupConModel)
    np.testing.assert_allclose(loaded.predict(x[:4], verbose=0),
                               model.predict(x[:4], verbose=0), atol=1e-6)
    clf = sct.models.LinearClassifier(model.encoder, 3)
    clf.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    clf.fit(x, y, epochs=1, verbose=0)
    clf.save(tmp_path / "clf.keras")
    clf2 = keras.models.load_model(tmp_path / "clf.keras", safe_mode=True)
    np.testing.assert_allclose(clf2.predict(x[:4], verbose=0), clf.predict(x[:4], verbose=0),
                               atol=1e-5)
    # No Lambda layers anywhere (they are what safe_mode refuses).
    for obj in (loaded, clf2):
        assert not [layer for layer in obj._flatten_layers()
                    if isinstance(layer, keras.layers.Lambda)]
