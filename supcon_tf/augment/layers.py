"""The augmentation layers: resized crop (XLA-compatible), random apply,
quarter turns, and the multi-view wrapper."""

import math

import keras
import tensorflow as tf

from supcon_tf._serialization import from_config_with_objects, serialize

_PACKAGE = "supcon_tf"


def _pair(value, name):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a pair of numbers (low, high). Received: {name}={value!r}"
        ) from None
    if not 0 < low <= high:
        raise ValueError(f"`{name}` must satisfy 0 < low <= high. Received: {name}={value!r}")
    return low, high


def _sample_coords(start, end, n_out, n_in):
    """`[batch, n_out]` source coordinates of `tf.image.crop_and_resize` for
    box edges `start`, `end` (fractions of the image, `[batch]`), clipped to
    the image."""
    span = tf.cast(n_in, tf.float32) - 1.0
    if n_out > 1:
        steps = tf.range(n_out, dtype=tf.float32) / float(n_out - 1)
        coords = (start * span)[:, None] + steps[None, :] * ((end - start) * span)[:, None]
    else:
        coords = (0.5 * (start + end) * span)[:, None]
    return tf.clip_by_value(coords, 0.0, span)


def _on_batch(images, fn):
    """`fn` on `images` as a batch: an unbatched image `[H, W, C]` goes
    through as a batch of one and comes back unbatched."""
    images = tf.convert_to_tensor(images)
    if images.shape.rank == 3:
        return fn(images[None])[0]
    return fn(images)


def crop_and_resize(images, boxes, size, method="bilinear"):
    """`tf.image.crop_and_resize(images, boxes, range(batch), size, method)`
    (one box per image, inside the image) written with gathers, so that it
    also compiles with XLA (`jit_compile=True`), which has no CropAndResize
    kernel. Values agree with TensorFlow's op to float32 round-off."""
    height, width = size
    shape = tf.shape(images)
    ys = _sample_coords(boxes[:, 0], boxes[:, 2], height, shape[1])
    xs = _sample_coords(boxes[:, 1], boxes[:, 3], width, shape[2])
    if method == "nearest":
        rows = tf.gather(images, tf.cast(tf.floor(ys + 0.5), tf.int32), axis=1, batch_dims=1)
        return tf.gather(rows, tf.cast(tf.floor(xs + 0.5), tf.int32), axis=2, batch_dims=1)
    y0, x0 = tf.floor(ys), tf.floor(xs)
    wy, wx = (ys - y0)[:, :, None, None], (xs - x0)[:, None, :, None]
    y0, x0 = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    y1 = tf.minimum(y0 + 1, shape[1] - 1)
    x1 = tf.minimum(x0 + 1, shape[2] - 1)
    top = tf.gather(images, y0, axis=1, batch_dims=1)
    bottom = tf.gather(images, y1, axis=1, batch_dims=1)
    rows = top + (bottom - top) * wy
    left = tf.gather(rows, x0, axis=2, batch_dims=1)
    right = tf.gather(rows, x1, axis=2, batch_dims=1)
    return left + (right - left) * wx


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RandomResizedCrop(keras.layers.Layer):
    """Crops a random area and aspect ratio of each image, resized to a fixed size.

    As torchvision's `RandomResizedCrop` (used by SimCLR and SupCon): each image
    gets its own crop whose area is a fraction in `scale` of the image and whose
    aspect ratio (width / height) is log-uniform in `ratio`; ten draws are tried
    per image and the first that fits is used, else a central crop with the
    ratio clipped into range. Vectorised (the crops are gathers with the
    arithmetic of `tf.image.crop_and_resize`, which also compile with XLA).
    At inference (`training=False`) images are only resized.

    Args:
        height: Output height.
        width: Output width.
        scale: Range of the crop's area as a fraction of the image.
            Defaults to (0.08, 1.0).
        ratio: Range of the crop's aspect ratio. Defaults to (3/4, 4/3).
        interpolation: `"bilinear"` or `"nearest"`. Defaults to `"bilinear"`.
        seed: Integer seed. Defaults to None.

    Example:

    >>> layer = RandomResizedCrop(24, 24, scale=(0.2, 1.0), seed=0)
    >>> layer(keras.ops.ones((2, 32, 32, 3)), training=True).shape
    TensorShape([2, 24, 24, 3])
    """

    def __init__(self, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 interpolation="bilinear", seed=None, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"`{name}` must be a positive integer. Received: {name}={value!r}")
        self.height, self.width = height, width
        self.scale = _pair(scale, "scale")
        if self.scale[1] > 1:
            raise ValueError(f"`scale` must lie in (0, 1]. Received: scale={scale!r}")
        self.ratio = _pair(ratio, "ratio")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError("`interpolation` must be 'bilinear' or 'nearest'. "
                             f"Received: interpolation={interpolation!r}")
        self.interpolation = interpolation
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._attempts = 10

    def sample_boxes(self, batch, image_height, image_width):
        """`[batch, 4]` float32 boxes `[y0, x0, y1, x1]` (fractions of the
        image, `tf.image.crop_and_resize`'s convention), one draw per image."""
        shape = (batch, self._attempts)
        area = keras.random.uniform(shape, self.scale[0], self.scale[1],
                                    seed=self.seed_generator)
        log_ratio = keras.random.uniform(
            shape, math.log(self.ratio[0]), math.log(self.ratio[1]),
            seed=self.seed_generator)
        aspect = tf.exp(log_ratio) * image_height / image_width  # in pixels
        # Crop height / width as fractions of the image's.
        crop_w = tf.sqrt(area * aspect)
        crop_h = tf.sqrt(area / aspect)
        fits = tf.logical_and(crop_w <= 1.0, crop_h <= 1.0)
        first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
        any_fit = tf.reduce_any(fits, axis=1)
        pick = lambda t: tf.gather(t, first, axis=1, batch_dims=1)  # noqa: E731
        # Fallback: a central crop of the largest box with a clipped ratio.
        in_ratio = tf.clip_by_value(image_width / image_height, self.ratio[0],
                                    self.ratio[1])
        fb_w = tf.minimum(1.0, in_ratio * image_height / image_width)
        fb_h = tf.minimum(1.0, image_width / (in_ratio * image_height))
        crop_w = tf.where(any_fit, pick(crop_w), fb_w)
        crop_h = tf.where(any_fit, pick(crop_h), fb_h)
        offsets = keras.random.uniform((batch, 2), seed=self.seed_generator)
        top = tf.where(any_fit, offsets[:, 0] * (1.0 - crop_h), (1.0 - crop_h) / 2)
        left = tf.where(any_fit, offsets[:, 1] * (1.0 - crop_w), (1.0 - crop_w) / 2)
        return tf.stack([top, left, top + crop_h, left + crop_w], axis=1)

    def call(self, images, training=True):
        images = tf.convert_to_tensor(images)
        unbatched = images.shape.rank == 3
        if unbatched:
            images = images[None]
        images = tf.cast(images, self.compute_dtype)
        shape = tf.shape(images)
        if training:
            boxes = self.sample_boxes(shape[0], tf.cast(shape[1], tf.float32),
                                tf.cast(shape[2], tf.float32))
            out = crop_and_resize(tf.cast(images, tf.float32), boxes,
                                  (self.height, self.width), self.interpolation)
        else:
            out = tf.image.resize(images, (self.height, self.width),
                                  method=self.interpolation)
        out = tf.cast(out, self.compute_dtype)
        return out[0] if unbatched else out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-3]) + (self.height, self.width, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"height": self.height, "width": self.width,
                       "scale": self.scale, "ratio": self.ratio,
                       "interpolation": self.interpolation, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RandomApply(keras.layers.Layer):
    """Applies `layer` to each image independently with probability `rate`.

    Vectorised: the layer runs on the whole batch and each image keeps the
    transformed or the original version.

    Args:
        layer: A Keras layer mapping a batch to a batch of the same shape.
        rate: Probability of applying it to an image. Defaults to 0.5.
        seed: Integer seed. Defaults to None.
    """

    def __init__(self, layer, rate=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(f"`layer` must be a Keras layer. Received: layer={layer!r}")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(f"`rate` must be in [0, 1]. Received: rate={rate!r}")
        self.layer = layer
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        def apply(batch):
            draw = keras.random.uniform((tf.shape(batch)[0], 1, 1, 1), seed=self.seed_generator)
            return tf.where(draw < self.rate, tf.cast(self.layer(batch, training=True),
                                                      batch.dtype), batch)

        return _on_batch(images, apply)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"layer": serialize(self.layer), "rate": self.rate,
                       "seed": self.seed})
        return config

    @classmethod
    def from_config(cls, config):
        return from_config_with_objects(cls, config, ["layer"])


def rotate90(images, k):
    """Each image of `images` `[B, H, H, C]` turned counter-clockwise by
    `k[b]` quarter turns (`k` int `[B]`, any integers). Square images only."""
    images = tf.convert_to_tensor(images)
    if images.shape[1] is not None and images.shape[1] != images.shape[2]:
        raise ValueError("Quarter turns keep the shape of square images only. "
                         f"Received: images.shape={images.shape}")
    k = tf.math.floormod(tf.cast(k, tf.int32), 4)[:, None, None, None]
    turned, out = images, images
    for quarter in (1, 2, 3):
        turned = tf.transpose(tf.reverse(turned, axis=[2]), [0, 2, 1, 3])    # one more turn
        out = tf.where(tf.equal(k, quarter), turned, out)
    return out


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RandomRotate90(keras.layers.Layer):
    """Turns each image by 0, 90, 180 or 270 degrees, drawn uniformly per
    image (square images). A rotation-invariant view for contrastive
    learning; LooC (`supcon_tf.models.LooCModel`) uses it as a family.

    Args:
        seed: Integer seed. Defaults to None.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        return _on_batch(images, lambda batch: rotate90(batch, keras.random.randint(
            (tf.shape(batch)[0],), 0, 4, seed=self.seed_generator)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MultiView(keras.layers.Layer):
    """Makes `views` independent augmentations of each image.

    Input `[batch, H, W, C]`, output `[batch, views, H', W', C]`; each view is
    an independent draw of `augmenter` (a single call on the tiled batch, so
    the work is vectorised).

    Args:
        augmenter: A Keras layer, e.g. `supcon_tf.augment.supcon(shape)`.
        views: Number of views, >= 1. Defaults to 2.

    Example:

    >>> mv = MultiView(supcon((28, 28, 1), seed=0), views=2)
    >>> mv(keras.ops.zeros((4, 28, 28, 1))).shape
    TensorShape([4, 2, 28, 28, 1])
    """

    def __init__(self, augmenter, views=2, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(augmenter, keras.layers.Layer):
            raise TypeError(
                f"`augmenter` must be a Keras layer. Received: augmenter={augmenter!r}")
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise ValueError(f"`views` must be an integer >= 1. Received: views={views!r}")
        self.augmenter = augmenter
        self.views = views

    def call(self, images, training=True):
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4:
            raise ValueError("MultiView expects images [batch, H, W, C]. "
                             f"Received: images.shape={images.shape}")
        batch = tf.shape(images)[0]
        tiled = tf.tile(images, [self.views, 1, 1, 1])        # view-major
        out = self.augmenter(tiled, training=training)
        out = tf.reshape(out, tf.concat([[self.views, batch], tf.shape(out)[1:]], 0))
        return tf.transpose(out, [1, 0, 2, 3, 4])

    def compute_output_shape(self, input_shape):
        inner = self.augmenter.compute_output_shape(input_shape)
        return (inner[0], self.views) + tuple(inner[1:])

    def get_config(self):
        config = super().get_config()
        config.update({"augmenter": serialize(self.augmenter), "views": self.views})
        return config

    @classmethod
    def from_config(cls, config):
        return from_config_with_objects(cls, config, ["augmenter"])
