import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from supcon_tf import augment
from supcon_tf.augment.randaugment import _GEOMETRIC as GEOMETRIC


def _ramp(batch=4, size=32, channels=1):
    """Images whose pixel value is its column index * 8: crops are readable."""
    cols = np.tile(np.arange(size, dtype=np.float32) * 8, (size, 1))
    return np.repeat(np.stack([cols] * batch)[..., None], channels, axis=-1)


def test_resized_crop_full_box_is_identity():
    x = _ramp()
    layer = augment.RandomResizedCrop(32, 32, scale=(1.0, 1.0), ratio=(1.0, 1.0), seed=0)
    np.testing.assert_allclose(layer(x, training=True), x, atol=1e-3)


def test_resized_crop_takes_the_requested_area():
    x = _ramp(batch=64)
    layer = augment.RandomResizedCrop(16, 16, scale=(0.25, 0.25), ratio=(1.0, 1.0), seed=1)
    out = layer(x, training=True).numpy()
    assert out.shape == (64, 16, 16, 1)
    # A square of a quarter of the area spans half of the columns: value range
    # about 8 * 16 (less a pixel at the edges of bilinear sampling).
    spans = out[:, 0, -1, 0] - out[:, 0, 0, 0]
    np.testing.assert_allclose(spans, 8 * 15.5, atol=8 * 1.1)
    # Independent crops per image: the left edges differ.
    assert len(np.unique(np.round(out[:, 0, 0, 0]))) > 10


def test_resized_crop_ratio_and_scale_ranges_hold():
    x = np.zeros((256, 40, 40, 1), np.float32)
    layer = augment.RandomResizedCrop(40, 40, scale=(0.1, 0.6), ratio=(0.5, 2.0), seed=2)
    boxes = layer.sample_boxes(256, 40.0, 40.0).numpy()
    heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    area = heights * widths
    assert np.all(area >= 0.1 - 1e-6) and np.all(area <= 0.6 + 1e-6)
    assert np.all(widths / heights >= 0.5 - 1e-5) and np.all(widths / heights <= 2 + 1e-5)
    assert np.all(boxes >= -1e-6) and np.all(boxes <= 1 + 1e-6)
    assert layer(x, training=True).shape == x.shape


def test_resized_crop_is_seeded_and_resizes_at_inference():
    x = _ramp()
    a = augment.RandomResizedCrop(20, 20, seed=5)(x, training=True)
    b = augment.RandomResizedCrop(20, 20, seed=5)(x, training=True)
    np.testing.assert_array_equal(a, b)
    resized = augment.RandomResizedCrop(16, 16, seed=5)(x, training=False)
    np.testing.assert_allclose(resized, tf.image.resize(x, (16, 16)), atol=1e-4)
    single = augment.RandomResizedCrop(20, 24, seed=5)(x[0], training=True)
    assert single.shape == (20, 24, 1)


def test_resized_crop_in_tf_data_and_uint8():
    x = (_ramp(batch=8, channels=3) % 256).astype(np.uint8)
    layer = augment.RandomResizedCrop(24, 24, seed=0)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(4).map(
        lambda t: layer(t, training=True), num_parallel_calls=tf.data.AUTOTUNE)
    out = list(ds)
    assert [o.shape for o in out] == [(4, 24, 24, 3)] * 2
    assert out[0].dtype == tf.float32


@pytest.mark.parametrize("kwargs,message", [
    (dict(height=0, width=4), "height=0"),
    (dict(height=4, width=4, scale=(0.5, 0.2)), "scale"),
    (dict(height=4, width=4, scale=(0.5, 1.5)), "scale"),
    (dict(height=4, width=4, ratio=(0, 1)), "ratio"),
    (dict(height=4, width=4, interpolation="cubic"), "interpolation='cubic'"),
])
def test_resized_crop_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        augment.RandomResizedCrop(**kwargs)


def test_random_apply_rate():
    x = np.ones((2000, 2, 2, 1), np.float32)
    negate = keras.layers.Rescaling(-1.0)
    assert np.all(augment.RandomApply(negate, rate=0.0, seed=0)(x).numpy() == 1)
    assert np.all(augment.RandomApply(negate, rate=1.0, seed=0)(x).numpy() == -1)
    applied = np.mean(augment.RandomApply(negate, rate=0.8, seed=0)(x).numpy()[:, 0, 0, 0] < 0)
    assert 0.75 < applied < 0.85
    assert np.all(augment.RandomApply(negate, 1.0)(x, training=False).numpy() == 1)
    with pytest.raises(ValueError, match="rate=1.5"):
        augment.RandomApply(negate, rate=1.5)


def test_multiview_shapes_and_independent_views():
    x = _ramp(batch=16)
    flip = keras.layers.RandomFlip("horizontal", seed=0)
    out = augment.MultiView(flip, views=3)(x).numpy()
    assert out.shape == (16, 3, 32, 32, 1)
    flipped = x[:, :, ::-1]
    is_flipped = np.array([[np.array_equal(out[i, v], flipped[i]) for v in range(3)]
                           for i in range(16)])
    is_same = np.array([[np.array_equal(out[i, v], x[i]) for v in range(3)]
                        for i in range(16)])
    assert np.all(is_flipped ^ is_same)          # every view is one draw of the layer
    assert 0 < is_flipped.mean() < 1             # and the draws differ
    with pytest.raises(ValueError, match="views=0"):
        augment.MultiView(flip, views=0)


@pytest.mark.parametrize("recipe", [augment.supcon, augment.simclr, augment.infomin])
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_recipes_handle_gray_and_color(recipe, shape):
    x = np.random.default_rng(0).integers(0, 256, size=(8,) + shape).astype(np.float32)
    layer = recipe(shape, seed=0)
    out = layer(x, training=True).numpy()
    assert out.shape == x.shape
    assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= 255.001
    assert not np.allclose(out, x)
    views = augment.MultiView(layer, 2)(x).numpy()
    assert not np.allclose(views[:, 0], views[:, 1])


def test_simclr_blurs_large_images_only():
    small = [type(layer).__name__ for layer in augment.simclr((32, 32, 3)).layers]
    large = augment.simclr((96, 96, 3)).layers
    assert not any(isinstance(getattr(layer, "layer", None), keras.layers.RandomGaussianBlur)
                   for layer in augment.simclr((32, 32, 3)).layers), small
    assert any(isinstance(getattr(layer, "layer", None), keras.layers.RandomGaussianBlur)
               for layer in large)
    with pytest.raises(ValueError, match="image_shape"):
        augment.simclr((32, 32, 2))
    with pytest.raises(ValueError, match="strength=-1"):
        augment.simclr((32, 32, 3), strength=-1)
    with pytest.raises(ValueError, match="strength=1.5"):
        augment.simclr((28, 28, 1), strength=1.5)
    # The largest strength builds and runs on one and three channels.
    for channels in (1, 3):
        out = augment.simclr((32, 32, channels), strength=augment.MAX_COLOR_STRENGTH, seed=0)(
            np.full((2, 32, 32, channels), 128, "float32"), training=True)
        assert out.shape == (2, 32, 32, channels)


def test_recipe_runs_vectorised_in_tf_data():
    x = np.random.default_rng(0).integers(0, 256, size=(64, 28, 28, 1)).astype(np.uint8)
    views = augment.MultiView(augment.supcon((28, 28, 1), seed=0), views=2)
    ds = (tf.data.Dataset.from_tensor_slices(x).batch(16)
          .map(lambda t: views(tf.cast(t, tf.float32)), num_parallel_calls=tf.data.AUTOTUNE))
    assert [tuple(b.shape) for b in ds] == [(16, 2, 28, 28, 1)] * 4


def test_augmenters_serialize(tmp_path):
    layer = augment.MultiView(augment.supcon((28, 28, 1), seed=3), views=2)
    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, layer(inputs))
    path = str(tmp_path / "aug.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    inner = loaded.layers[-1]
    assert isinstance(inner, augment.MultiView) and inner.views == 2
    crop = inner.augmenter.layers[0]
    assert isinstance(crop, augment.RandomResizedCrop)
    assert crop.get_config()["scale"] == (0.2, 1.0) or list(crop.get_config()["scale"]) == [0.2, 1.0]
    assert crop.seed == 3


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
@pytest.mark.parametrize("size", [(7, 5), (1, 1), (12, 12)])
def test_crop_and_resize_equals_tensorflow_op(method, size):
    rng = np.random.default_rng(len(method) + size[0])
    images = tf.constant(rng.uniform(0, 255, size=(6, 9, 11, 2)), tf.float32)
    top_left = rng.uniform(0, 0.5, size=(6, 2))
    extent = rng.uniform(0.1, 0.5, size=(6, 2))
    boxes = np.concatenate([top_left, top_left + extent], axis=1).astype("float32")
    boxes[0] = [0, 0, 1, 1]  # the whole image
    want = tf.image.crop_and_resize(images, boxes, tf.range(6), size, method=method)
    got = augment.crop_and_resize(images, tf.constant(boxes), size, method)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-3)


def test_random_resized_crop_compiles_with_xla():
    layer = augment.RandomResizedCrop(20, 20, scale=(0.2, 1.0), seed=3)
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)),
                         tf.float32)
    out = tf.function(lambda x: layer(x, training=True), jit_compile=True)(images)
    assert out.shape == (4, 20, 20, 1)
    assert np.all(np.isfinite(out.numpy())) and out.numpy().max() <= 255.0 + 1e-3


@pytest.mark.parametrize("spec,message", [
    ({"recipe": "supcon", "color_strength": 1.0}, "`color_strength` needs the 'simclr' recipe"),
    ({"recipe": "byol"}, "Received: recipe='byol'"),
    ({"recipe": "simclr", "magnitude": 5.0}, "`magnitude` needs the 'infomin' recipe"),
])
def test_recipe_spec_bad_values(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        augment.from_spec(spec, (28, 28, 1))


# --- RandAugment (timm's, per image) against PIL ------------------------------

def _pil_op(op, image, level):
    """timm's operation `op` at magnitude `10 * level` on a uint8 [H, W] image."""
    from PIL import Image, ImageEnhance, ImageOps
    im = Image.fromarray(image, "L")
    factor = 1.8 * level + 0.1
    add = int(110 * level)
    out = {
        "auto_contrast": lambda: ImageOps.autocontrast(im),
        "equalize": lambda: ImageOps.equalize(im),
        "invert": lambda: ImageOps.invert(im),
        "posterize": lambda: ImageOps.posterize(im, int(4 * level)),
        "solarize": lambda: ImageOps.solarize(im, int(256 * level)),
        "solarize_add": lambda: im.point([min(255, i + add) if i < 128 else i
                                          for i in range(256)]),
        "color": lambda: ImageEnhance.Color(im).enhance(factor),
        "contrast": lambda: ImageEnhance.Contrast(im).enhance(factor),
        "brightness": lambda: ImageEnhance.Brightness(im).enhance(factor),
        "sharpness": lambda: ImageEnhance.Sharpness(im).enhance(factor),
    }[op]()
    return np.asarray(out, np.float32)


def _pil_geometric(op, image, level, sign):
    from PIL import Image
    im, side = Image.fromarray(image, "L"), image.shape[0]
    if op == "rotate":
        return np.asarray(im.rotate(sign * 30 * level, resample=Image.BILINEAR,
                                    fillcolor=128), np.float32)
    matrix = {"shear_x": (1, sign * 0.3 * level, 0, 0, 1, 0),
              "shear_y": (1, 0, 0, sign * 0.3 * level, 1, 0),
              "translate_x": (1, 0, sign * 0.45 * level * side, 0, 1, 0),
              "translate_y": (1, 0, 0, 0, 1, sign * 0.45 * level * side)}[op]
    return np.asarray(im.transform(im.size, Image.AFFINE, matrix, resample=Image.BILINEAR,
                                   fillcolor=128), np.float32)


def test_rand_augment_operations_equal_pil():
    """Each operation, forced (rate 1, one op, no magnitude noise), equals
    PIL's within PIL's rounding to uint8; the geometric ones up to their
    random sign."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28)).astype(np.uint8)
    images[0] = 7                                        # flat: equalize / autocontrast no-ops
    images[1] = images[1] // 4 + 60                      # a narrow range
    for op in augment.RAND_AUGMENT_OPS:
        for magnitude in (3.0, 10.0):
            layer = augment.RandAugment(1, magnitude=magnitude, magnitude_std=0.0, rate=1.0,
                                        ops=[op], seed=1)
            got = layer(images[..., None].astype(np.float32), training=True).numpy()[..., 0]
            level = magnitude / 10
            for image, out in zip(images, got):
                if op in GEOMETRIC:
                    err = min(np.abs(out - _pil_geometric(op, image, level, s)).max()
                              for s in (1, -1))
                else:
                    err = np.abs(out - _pil_op(op, image, level)).max()
                assert err <= 1.5, (op, magnitude, err)


def test_rand_augment_draws_per_image():
    images = np.repeat(np.random.default_rng(1).integers(0, 256, (1, 16, 16, 1)), 400, 0)
    images = images.astype(np.float32)
    # One op at rate 0.5: about half of the identical images change.
    out = augment.RandAugment(1, rate=0.5, ops=["invert"], seed=0)(images, training=True)
    changed = np.mean(np.abs(out.numpy() - images).max(axis=(1, 2, 3)) > 0)
    assert 0.4 < changed < 0.6, changed
    # Two of fifteen ops per image: the batch is not one transformation.
    out = augment.RandAugment(2, rate=1.0, seed=0)(images, training=True).numpy()
    distinct = {out[i].tobytes() for i in range(len(out))}
    assert len(distinct) > 50
    np.testing.assert_array_equal(augment.RandAugment(seed=0)(images, training=False), images)


def test_rand_augment_compiles_with_xla_and_serializes():
    layer = augment.RandAugment(2, magnitude=9.0, ops=["rotate", "equalize", "sharpness"],
                                fill_value=73.0, seed=4)
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)), tf.float32)
    out = tf.function(lambda x: layer(x, training=True), jit_compile=True)(images).numpy()
    assert out.shape == (4, 28, 28, 1) and out.min() >= 0 and out.max() <= 255
    copy = augment.RandAugment.from_config(layer.get_config())
    assert copy.get_config() == layer.get_config()
    assert copy.ops == ("rotate", "equalize", "sharpness") and copy.fill_value == 73.0


@pytest.mark.parametrize("kwargs,message", [
    ({"num_ops": 0}, "num_ops=0"),
    ({"magnitude": 11}, "magnitude=11"),
    ({"rate": 1.5}, "rate=1.5"),
    ({"ops": ["cutout"]}, "ops=('cutout',)"),
])
def test_rand_augment_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        augment.RandAugment(**kwargs)


def test_infomin_recipe_from_spec():
    layer = augment.from_spec({"recipe": "infomin", "crop_min_scale": 0.4, "magnitude": 6.0},
                              (28, 28, 1), seed=0)
    kinds = [type(layer).__name__ for layer in layer.layers]
    assert kinds == ["RandomResizedCrop", "RandomFlip", "RandomApply", "RandAugment"]
    assert layer.layers[0].scale == (0.4, 1.0) and layer.layers[-1].magnitude == 6.0
    colour = [type(layer).__name__ for layer in augment.infomin((32, 32, 3)).layers]
    assert colour[-1] == "RandomGrayscale"
