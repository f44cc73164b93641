import keras
import numpy as np
import pytest

from supcon_tf import encoders, layers


@pytest.mark.parametrize("name,width,shape,features", [
    ("resnet18", 0.125, (28, 28, 1), 64),
    ("resnet18", 0.25, (32, 32, 3), 128),
    ("resnet34", 0.0625, (32, 32, 3), 32),
    ("resnet50", 0.0625, (28, 28, 1), 128),
    ("resnet18", 0.0625, (64, 48, 3), 32),
])
def test_resnets_give_pooled_features(name, width, shape, features):
    model = encoders.get(name, shape, width=width)
    x = np.random.default_rng(0).integers(0, 256, size=(2,) + shape).astype(np.float32)
    out = model(x, training=False)
    assert out.shape == (2, features)
    assert model.output.shape == (None, features)
    # CIFAR stem: a 3x3 stride-1 conv and no max-pool.
    stem = model.get_layer("stem_conv")
    assert stem.kernel_size == (3, 3) and stem.strides == (1, 1)
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers)


def test_depths_have_the_right_number_of_convs():
    def convs(model):
        return sum(isinstance(layer, keras.layers.Conv2D) and "short" not in layer.name
                   for layer in model.layers)
    assert convs(encoders.resnet18((32, 32, 3), width=0.0625)) == 17   # + fc = 18
    assert convs(encoders.resnet34((32, 32, 3), width=0.0625)) == 33
    assert convs(encoders.resnet50((32, 32, 3), width=0.0625)) == 49


def test_synchronized_batch_norm_option():
    model = encoders.resnet18((28, 28, 1), width=0.0625, synchronized_bn=True)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(layer.synchronized for layer in bns)


def test_encoder_arguments_are_checked():
    with pytest.raises(ValueError, match="depth=20"):
        encoders.resnet(20)
    with pytest.raises(ValueError, match="width=0"):
        encoders.resnet18(width=0)
    with pytest.raises(ValueError, match="input_shape"):
        encoders.resnet18((4, 4, 1))
    with pytest.raises(ValueError, match="name='vgg'"):
        encoders.get("vgg", (32, 32, 3))


def test_any_keras_backbone_with_pooling_is_an_encoder():
    backbone = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, pooling="avg", weights=None,
        include_preprocessing=False)
    assert encoders.as_encoder(backbone) is backbone
    unpooled = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None)
    with pytest.raises(ValueError, match="pooling='avg'"):
        encoders.as_encoder(unpooled)
    with pytest.raises(TypeError, match="keras.Model"):
        encoders.as_encoder(keras.layers.Dense(3))


@pytest.mark.parametrize("kind,hidden,expected_dense", [
    ("mlp", None, 2), ("mlp", (32, 16), 3), ("linear", None, 1), ("none", None, 0)])
def test_projection_head_kinds(kind, hidden, expected_dense):
    head = layers.ProjectionHead(24, hidden_dims=hidden, kind=kind)
    x = np.random.default_rng(0).normal(size=(6, 2, 40)).astype(np.float32)
    out = head(x, training=True).numpy()
    assert out.shape == (6, 2, 40 if kind == "none" else 24)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)
    kernels = [w for w in head.weights if w.path.endswith("kernel")]
    assert len(kernels) == expected_dense
    assert head(x[:, 0]).shape[0] == 6   # rank 2 input works too


def test_projection_head_round_trip_and_checks(tmp_path):
    inputs = keras.Input((40,))
    model = keras.Model(inputs, layers.ProjectionHead(16, hidden_dims=(32,))(inputs))
    x = np.random.default_rng(1).normal(size=(5, 40)).astype(np.float32)
    path = str(tmp_path / "head.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    with pytest.raises(ValueError, match="kind='deep'"):
        layers.ProjectionHead(kind="deep")
    with pytest.raises(ValueError, match="output_dim=0"):
        layers.ProjectionHead(0)
    with pytest.raises(ValueError, match="hidden_dims"):
        layers.ProjectionHead(8, hidden_dims=(0,))


def test_projection_head_synchronized_batch_norm():
    head = layers.ProjectionHead(8, hidden_dims=(16, 16), synchronized_bn=True)
    head.build((None, 12))
    bns = [block[1] for block in head.blocks]
    assert len(bns) == 2 and all(bn.synchronized for bn in bns)
    clone = layers.ProjectionHead.from_config(head.get_config())
    assert clone.synchronized_bn
    assert not layers.ProjectionHead(8).synchronized_bn


# -- Conv2D: Keras's Conv2D with the input gradient as a forward convolution ------


def _conv_pair(x, **kwargs):
    """Outputs and gradients (input, kernel, bias) of keras.layers.Conv2D and
    Conv2D with the same weights, on `x`."""
    import tensorflow as tf
    reference = keras.layers.Conv2D(**kwargs)
    fast = layers.Conv2D(**kwargs)
    reference.build(x.shape)
    fast.build(x.shape)
    rng = np.random.default_rng(1)
    for a, b in zip(reference.weights, fast.weights):
        a.assign(rng.normal(size=a.shape).astype("float32"))
        b.assign(a)
    results = []
    for layer in (reference, fast):
        x_t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x_t)
            y = layer(x_t)
            w = tf.constant(np.random.default_rng(2).normal(size=y.shape), y.dtype)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.cast(w, tf.float32))
        results.append([y] + tape.gradient(loss, [x_t] + layer.trainable_weights))
    return results, fast


@pytest.mark.parametrize("kwargs,forward_gradient", [
    (dict(filters=7, kernel_size=3, padding="same", use_bias=False), True),
    (dict(filters=4, kernel_size=(5, 3), padding="same"), True),
    (dict(filters=7, kernel_size=3, strides=2, padding="same"), False),
    (dict(filters=7, kernel_size=3, padding="valid"), False),
    (dict(filters=7, kernel_size=2, padding="same"), False),
    (dict(filters=6, kernel_size=3, padding="same", dilation_rate=2), False),
    (dict(filters=6, kernel_size=3, padding="same", groups=3), False),
])
def test_fast_conv2d_equals_keras_conv2d_values_and_gradients(kwargs, forward_gradient):
    x = np.random.default_rng(0).normal(size=(3, 9, 8, 6)).astype("float32")
    (ref, fast), layer = _conv_pair(x, **kwargs)
    assert layer._forward_input_gradient() is forward_gradient
    for a, b in zip(ref, fast):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-4)


def test_fast_conv2d_under_xla_and_mixed_precision():
    import tensorflow as tf
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32"))
    layer = layers.Conv2D(5, 3, padding="same")
    layer.build(x.shape)

    def grads(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x)))
        return tape.gradient(loss, [x] + layer.trainable_weights)

    eager = grads(x)
    for a, b in zip(eager, tf.function(grads, jit_compile=True)(x)):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-4)
    try:
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
        low = layers.Conv2D(5, 3, padding="same")
        low.build(x.shape)
        low.set_weights(layer.get_weights())
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = low(x)
            loss = tf.reduce_sum(tf.square(tf.cast(y, tf.float32)))
        g_x, g_kernel, _ = tape.gradient(loss, [x] + low.trainable_weights)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert y.dtype == tf.bfloat16 and g_kernel.dtype == tf.float32
    np.testing.assert_allclose(g_x.numpy(), eager[0].numpy(), rtol=0.05, atol=0.5)


def test_resnets_use_fast_conv2d_and_round_trip(tmp_path):
    model = encoders.resnet18((16, 16, 1), width=0.0625)
    convs = [lay for lay in model.layers if isinstance(lay, keras.layers.Conv2D)]
    assert convs and all(isinstance(c, layers.Conv2D) for c in convs)
    # The 3x3 stride-1 ones take the forward-convolution gradient, the rest Keras's.
    assert sum(c._forward_input_gradient() for c in convs) == 14   # stem, 4 + 3 + 3 + 3 in blocks
    model.save(tmp_path / "enc.keras")
    loaded = keras.models.load_model(tmp_path / "enc.keras")
    assert isinstance(loaded.get_layer(convs[0].name), layers.Conv2D)
    x = np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(loaded(x, training=False).numpy(),
                               model(x, training=False).numpy(), rtol=1e-5, atol=1e-5)


def test_weights_saved_with_keras_conv2d_load_into_the_encoders(tmp_path):
    # Keras keys a weights file by class name: the encoders' Conv2D keeps the
    # name "Conv2D", so weights (and BackupAndRestore checkpoints) saved before
    # it existed load into today's encoders.
    import supcon_tf
    build = supcon_tf.encoders.backbones._conv
    try:
        supcon_tf.encoders.backbones._conv = lambda f, k, s, name: keras.layers.Conv2D(
            f, k, strides=s, padding="same", use_bias=False, name=name)
        old = encoders.resnet18((16, 16, 1), width=0.0625)
    finally:
        supcon_tf.encoders.backbones._conv = build
    old.save_weights(tmp_path / "old.weights.h5")
    new = encoders.resnet18((16, 16, 1), width=0.0625)
    new.load_weights(tmp_path / "old.weights.h5")
    x = np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(new(x, training=False).numpy(), old(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_the_layers_module_keeps_every_name_it_had():
    """Code and `.keras` files that name `supcon_tf.layers` keep working."""
    import supcon_tf as sct
    assert sct.layers.ProjectionHead is sct.heads.ProjectionHead
    assert sct.layers.Prototypes is sct.memory.Prototypes
    assert sct.layers.Conv2D is sct.encoders.Conv2D
    for name in ("L2Normalize", "byol_predictor", "byol_projector", "simsiam_predictor",
                 "simsiam_projector", "barlow_twins_projector", "vicreg_expander",
                 "swav_projector", "HEAD_KINDS"):
        assert getattr(sct.layers, name) is getattr(sct.heads, name)
