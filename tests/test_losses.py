import itertools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from supcon_tf.losses import SupConLoss, supcon_loss
from tests.reference import supcon_pytorch_port, supcon_reference

RNG = np.random.default_rng(1234)
B, V, D = 6, 3, 5
FEATURES = RNG.normal(size=(B, V, D)).astype(np.float32)
IDS = np.array([2, 0, 2, 1, 2, 0])
ONE_HOT = np.eye(3, dtype=np.float32)[IDS]
MULTI_HOT = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0],
                      [0, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=np.float32)
ASYM_MASK = (RNG.random((B, B)) < 0.4).astype(np.float32)
np.fill_diagonal(ASYM_MASK, 1.0)
ASYM_MASK[2, 2] = 0.0  # sample 2's own views are negatives of it

LABEL_KINDS = {
    "ids": dict(y_true=IDS),
    "ids_col": dict(y_true=IDS[:, None]),
    "one_hot": dict(y_true=ONE_HOT),
    "multi_hot": dict(y_true=MULTI_HOT),
    "none": dict(y_true=None),
    "mask": dict(y_true=None, mask=ASYM_MASK),
}
OPTION_GRID = list(itertools.product(
    ["all", "one"], ["out", "in"], ["all", "one_positive", "only_negatives"],
    [None, 0, 1, 2]))


def _reference(kind, features=FEATURES, **options):
    spec = LABEL_KINDS[kind]
    return supcon_reference(spec["y_true"], features, mask=spec.get("mask"),
                            **options)


def _ours(kind, features=FEATURES, **options):
    spec = LABEL_KINDS[kind]
    return supcon_loss(spec["y_true"], features, mask=spec.get("mask"),
                       **options).numpy()


@pytest.mark.parametrize("kind", sorted(LABEL_KINDS))
@pytest.mark.parametrize("contrast_mode,variant,denominator,cap", OPTION_GRID)
def test_matches_loop_reference(kind, contrast_mode, variant, denominator, cap):
    options = dict(temperature=0.5, contrast_mode=contrast_mode, variant=variant,
                   denominator=denominator, positives_cap=cap)
    ours = _ours(kind, **options)
    assert ours.shape == (B,)
    np.testing.assert_allclose(ours, _reference(kind, **options), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temperature,base_temperature", [
    (0.07, 0.07), (0.1, None), (0.5, 0.07), (1.0, 2.0), (0.01, None)])
@pytest.mark.parametrize("normalize", [True, False])
def test_temperatures_and_normalize(temperature, base_temperature, normalize):
    features = FEATURES if normalize else FEATURES / 4.0
    options = dict(temperature=temperature, base_temperature=base_temperature,
                   normalize=normalize)
    np.testing.assert_allclose(_ours("ids", features, **options),
                               _reference("ids", features, **options),
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("contrast_mode", ["all", "one"])
@pytest.mark.parametrize("labels", [IDS, None])
def test_matches_authors_pytorch_code(contrast_mode, labels):
    z = FEATURES / np.linalg.norm(FEATURES, axis=-1, keepdims=True)
    expected = supcon_pytorch_port(labels, z, temperature=0.07, base_temperature=0.07,
                                   contrast_mode=contrast_mode)
    ours = SupConLoss(temperature=0.07, contrast_mode=contrast_mode)(labels, z)
    np.testing.assert_allclose(float(ours), expected, rtol=1e-5)


def test_simclr_is_nt_xent():
    # NT-Xent for 2 views written as softmax cross-entropy over the other 2B-1 views.
    z = FEATURES[:, :2]
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    flat = np.concatenate([z[:, 0], z[:, 1]]).astype(np.float64)
    logits = flat @ flat.T / 0.2
    np.fill_diagonal(logits, -np.inf)
    target = np.concatenate([np.arange(B) + B, np.arange(B)])
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    per_row = -log_softmax[np.arange(2 * B), target]
    expected = per_row.reshape(2, B).mean(0)
    np.testing.assert_allclose(supcon_loss(None, z, temperature=0.2), expected,
                               rtol=1e-5)


def test_orthogonal_unit_vectors_by_hand():
    e1, e2 = np.eye(2, dtype=np.float32)
    z = np.stack([[e1, e1], [e2, e2]])  # two samples, two identical views each
    # Anchor: positive logit 1 (its other view), two negatives at logit 0.
    expected = math.log(1 + 2 / math.e)
    np.testing.assert_allclose(supcon_loss([0, 1], z, temperature=1.0), [expected] * 2,
                               rtol=1e-6)
    # Same class: three positives at logit 1 or 0 -> -mean(log softmax).
    same = -np.mean([1 - math.log(math.e + 2), 0 - math.log(math.e + 2),
                     0 - math.log(math.e + 2)])
    np.testing.assert_allclose(supcon_loss([0, 0], z, temperature=1.0), [same] * 2,
                               rtol=1e-6)


def test_identical_embeddings_by_hand():
    # All logits equal: L_out = log(#others), one_positive = log(1 + #neg),
    # only_negatives = log(#neg).
    z = np.ones((4, 2, 3), np.float32)
    labels = [0, 0, 1, 1]
    np.testing.assert_allclose(supcon_loss(labels, z), [math.log(7)] * 4, rtol=1e-6)
    np.testing.assert_allclose(supcon_loss(labels, z, denominator="one_positive"),
                               [math.log(5)] * 4, rtol=1e-6)
    np.testing.assert_allclose(supcon_loss(labels, z, denominator="only_negatives"),
                               [math.log(4)] * 4, rtol=1e-6)


def test_base_temperature_scales_linearly():
    a = supcon_loss(IDS, FEATURES, temperature=0.1)
    b = supcon_loss(IDS, FEATURES, temperature=0.1, base_temperature=0.07)
    np.testing.assert_allclose(b, a * 0.1 / 0.07, rtol=1e-6)


def _fd_gradient(fn, x, eps=1e-6):
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        grad[idx] = (fn(plus) - fn(minus)) / (2 * eps)
    return grad


@pytest.mark.parametrize("kind,contrast_mode,variant,denominator,cap", [
    ("ids", "all", "out", "all", None),
    ("ids", "all", "in", "all", None),
    ("ids", "one", "out", "one_positive", None),
    ("ids", "all", "in", "only_negatives", 1),
    ("multi_hot", "all", "out", "all", 1),
    ("multi_hot", "one", "in", "one_positive", 0),
    ("none", "all", "out", "all", None),
    ("mask", "all", "in", "all", 2),
    ("mask", "one", "out", "only_negatives", None),
    ("one_hot", "all", "out", "one_positive", 2),
])
def test_gradient_matches_finite_differences(kind, contrast_mode, variant,
                                             denominator, cap):
    options = dict(temperature=0.3, contrast_mode=contrast_mode, variant=variant,
                   denominator=denominator, positives_cap=cap)
    weights = np.linspace(0.5, 1.5, B)  # a non-uniform sum tests each sample's row

    x = tf.constant(FEATURES)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.reduce_sum(_ours_tensor(kind, x, options) * weights)
    grad = tape.gradient(value, x).numpy()
    expected = _fd_gradient(
        lambda f: float(np.sum(_reference(kind, f, **options) * weights)),
        FEATURES.astype(np.float64))
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)


def _ours_tensor(kind, x, options):
    spec = LABEL_KINDS[kind]
    return supcon_loss(spec["y_true"], x, mask=spec.get("mask"), **options)


def test_no_positive_anchor_contributes_zero_and_no_nan():
    z = tf.constant(FEATURES[:, :1])  # one view: no sample has its own positive
    labels = np.array([0, 1, 2, 3, 3, 4])  # only samples 3 and 4 share a class
    with tf.GradientTape() as tape:
        tape.watch(z)
        loss = supcon_loss(labels, z)
        total = tf.reduce_sum(loss)
    grad = tape.gradient(total, z)
    assert np.all(loss.numpy()[[0, 1, 2, 5]] == 0)
    assert np.all(loss.numpy()[[3, 4]] > 0)
    assert np.all(np.isfinite(grad.numpy()))
    # Entirely positive-free batch: zero loss, zero gradient.
    with tf.GradientTape() as tape:
        tape.watch(z)
        loss = supcon_loss(np.arange(B), z)
        total = tf.reduce_sum(loss)
    np.testing.assert_array_equal(loss.numpy(), np.zeros(B))
    np.testing.assert_array_equal(tape.gradient(total, z).numpy(), 0.0)


def test_only_negatives_without_negatives_is_zero_not_nan():
    z = tf.constant(FEATURES)
    with tf.GradientTape() as tape:
        tape.watch(z)
        loss = supcon_loss(np.zeros(B), z, denominator="only_negatives")
        total = tf.reduce_sum(loss)
    np.testing.assert_array_equal(loss.numpy(), np.zeros(B))
    np.testing.assert_array_equal(tape.gradient(total, z).numpy(), 0.0)


@pytest.mark.parametrize("denominator", ["all", "one_positive", "only_negatives"])
@pytest.mark.parametrize("variant", ["out", "in"])
def test_stable_at_low_temperature(denominator, variant):
    # Nearly parallel embeddings at T=0.01: logits near 100, exp would overflow
    # float32 without the shifts.
    base = RNG.normal(size=(1, 1, D))
    z = (base + 0.05 * RNG.normal(size=(B, V, D))).astype(np.float32)
    z[1] = -z[1]  # and one sample far away (logits near -100)
    options = dict(temperature=0.01, variant=variant, denominator=denominator)
    x = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = supcon_loss(IDS, x, **options)
        total = tf.reduce_sum(loss)
    grad = tape.gradient(total, x).numpy()
    assert np.all(np.isfinite(loss.numpy())) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(loss.numpy(), supcon_reference(IDS, z, **options),
                               rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_low_and_high_precision_inputs_compute_in_float32(dtype):
    x = tf.cast(tf.constant(FEATURES), dtype)
    loss = supcon_loss(IDS, x, temperature=0.05)
    assert loss.dtype == tf.float32
    expected = supcon_reference(IDS, tf.cast(x, tf.float64).numpy(), temperature=0.05)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-4, atol=1e-4)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.reduce_sum(supcon_loss(IDS, x, temperature=0.01))
    grad = tape.gradient(value, x)
    assert grad.dtype == x.dtype
    assert np.all(np.isfinite(tf.cast(grad, tf.float32).numpy()))
    keras_value = SupConLoss(temperature=0.05)(IDS, x)
    assert keras_value.dtype == tf.float32
    np.testing.assert_allclose(float(keras_value), expected.mean(), rtol=1e-4)


def test_rank2_is_one_view_and_trailing_dims_flatten():
    np.testing.assert_allclose(supcon_loss(IDS, FEATURES[:, 0]),
                               supcon_loss(IDS, FEATURES[:, :1]), rtol=1e-6)
    wide = RNG.normal(size=(B, V, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(supcon_loss(IDS, wide),
                               supcon_loss(IDS, wide.reshape(B, V, 6)), rtol=1e-6)


def test_graph_mode_with_unknown_shapes():
    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64),
                                  tf.TensorSpec([None, None, D], tf.float32)])
    def fn(labels, z):
        return supcon_loss(labels, z, positives_cap=1, denominator="one_positive")

    np.testing.assert_allclose(
        fn(tf.constant(IDS), tf.constant(FEATURES)).numpy(),
        supcon_reference(IDS, FEATURES, positives_cap=1, denominator="one_positive"),
        rtol=1e-5, atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="number of labels"):
        fn(tf.constant(IDS[:4]), tf.constant(FEATURES))


# --- the Keras loss -------------------------------------------------------

def test_keras_loss_reductions_and_sample_weight():
    per_sample = supcon_reference(IDS, FEATURES, temperature=0.2)
    weights = np.array([1, 0, 2, 0.5, 1, 3], np.float32)
    loss = SupConLoss(temperature=0.2)
    np.testing.assert_allclose(float(loss(IDS, FEATURES)), per_sample.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(loss(IDS, FEATURES, sample_weight=weights)),
                               (per_sample * weights).sum() / B, rtol=1e-5)
    summed = SupConLoss(temperature=0.2, reduction="sum")
    np.testing.assert_allclose(float(summed(IDS, FEATURES)), per_sample.sum(), rtol=1e-5)
    none = SupConLoss(temperature=0.2, reduction=None)
    np.testing.assert_allclose(none(IDS, FEATURES).numpy(), per_sample, rtol=1e-5)
    mean = SupConLoss(temperature=0.2, reduction="mean")
    np.testing.assert_allclose(float(mean(IDS, FEATURES)), per_sample.mean(), rtol=1e-5)


def test_keras_loss_without_labels_is_simclr():
    np.testing.assert_allclose(float(SupConLoss()(None, FEATURES)),
                               supcon_reference(None, FEATURES).mean(), rtol=1e-5)


def test_keras_loss_passes_every_option():
    options = dict(temperature=0.3, base_temperature=0.5, contrast_mode="one",
                   variant="in", denominator="one_positive", positives_cap=1,
                   normalize=False)
    np.testing.assert_allclose(float(SupConLoss(**options)(IDS, FEATURES / 3)),
                               supcon_reference(IDS, FEATURES / 3, **options).mean(),
                               rtol=1e-5)


def test_config_round_trip():
    loss = SupConLoss(temperature=0.2, base_temperature=0.07, contrast_mode="one",
                      variant="in", denominator="only_negatives", positives_cap=3,
                      normalize=False, reduction="sum", name="my_loss")
    config = loss.get_config()
    assert config["temperature"] == 0.2 and config["positives_cap"] == 3
    clone = SupConLoss.from_config(config)
    assert clone.get_config() == config
    revived = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(revived, SupConLoss) and revived.get_config() == config
    assert keras.saving.get_registered_name(SupConLoss) == "supcon_tf>SupConLoss"


# --- bad input ------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    (dict(temperature=0), "temperature=0"),
    (dict(temperature=-0.5), "temperature=-0.5"),
    (dict(base_temperature=0.0), "base_temperature=0.0"),
    (dict(contrast_mode="some"), "contrast_mode='some'"),
    (dict(variant="mid"), "variant='mid'"),
    (dict(denominator="positives"), "denominator='positives'"),
    (dict(positives_cap=-1), "positives_cap=-1"),
])
def test_bad_options_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        supcon_loss(IDS, FEATURES, **kwargs)
    with pytest.raises(ValueError, match=message):
        SupConLoss(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(temperature="0.1"), dict(positives_cap=1.5),
                                    dict(positives_cap=True)])
def test_bad_option_types_raise_type_error(kwargs):
    with pytest.raises(TypeError, match=next(iter(kwargs))):
        SupConLoss(**kwargs)


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match=r"rank >= 2.*y_pred.shape=\(6,\)"):
        supcon_loss(IDS, FEATURES[:, 0, 0])
    with pytest.raises(ValueError, match="number of labels.*4 labels.*batch of 6"):
        supcon_loss(IDS[:4], FEATURES)
    with pytest.raises(ValueError, match="either `y_true`.*or `mask`"):
        supcon_loss(IDS, FEATURES, mask=np.eye(B))
    with pytest.raises(ValueError, match=r"mask.shape=\(6, 5\)"):
        supcon_loss(None, FEATURES, mask=np.ones((B, 5)))
    with pytest.raises(ValueError, match=r"mask.shape=\(6,\)"):
        supcon_loss(None, FEATURES, mask=np.ones(B))
    with pytest.raises(ValueError, match=r"y_true.shape=\(6, 1, 1\)"):
        supcon_loss(IDS[:, None, None], FEATURES)
    with pytest.raises(ValueError, match="one view"):
        supcon_loss(IDS, FEATURES[:, :0])
    with pytest.raises(ValueError, match="number of labels"):
        SupConLoss()(IDS[:5], FEATURES)


# --- in a Keras model -----------------------------------------------------

@keras.saving.register_keras_serializable(package="supcon_tf_tests")
class TwoViewNet(keras.Model):
    """A small model that makes its own two noisy views: output [batch, 2, 8]."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.noise = keras.layers.GaussianNoise(0.3, seed=1)
        self.hidden = keras.layers.Dense(32, activation="relu")
        self.out = keras.layers.Dense(8)

    def call(self, x, training=False):
        views = [self.noise(x, training=True) for _ in range(2)]
        return self.out(self.hidden(keras.ops.stack(views, axis=1)))


def _clustered_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=n)
    centers = rng.normal(size=(4, 10)) * 2
    x = (centers[labels] + rng.normal(size=(n, 10))).astype(np.float32)
    return x, labels


def test_compile_and_fit_lowers_the_loss():
    keras.utils.set_random_seed(0)
    x, y = _clustered_data()
    model = TwoViewNet()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=SupConLoss(temperature=0.2))
    history = model.fit(x, y, batch_size=64, epochs=8, verbose=0).history["loss"]
    assert all(np.isfinite(history))
    assert history[-1] < history[0] - 0.2, history
    # Without labels the same model trains self-supervised.
    history = model.fit(x, batch_size=64, epochs=3, verbose=0).history["loss"]
    assert all(np.isfinite(history))


def test_model_compiled_with_loss_saves_and_loads(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = _clustered_data(64)
    model = TwoViewNet()
    model.compile(optimizer="sgd", loss=SupConLoss(temperature=0.3, positives_cap=4))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.loss, SupConLoss)
    assert loaded.loss.get_config() == model.loss.get_config()
    np.testing.assert_allclose(loaded.out.kernel.numpy(), model.out.kernel.numpy())
    loaded.fit(x, y, batch_size=32, epochs=1, verbose=0)
